"""The grid: a run's plan, its jobs (train a model; measure it with one family), the executors
that run them, and the runner that ties them together."""

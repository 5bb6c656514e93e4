"""Reports built from a results store alone: the vocabulary (columns), the tidy table and
leaderboard (tables), the masking audit, the claims, plots, the HTML page and the RobustBench
exports; publish.py writes them all (``python -m bench.report``)."""

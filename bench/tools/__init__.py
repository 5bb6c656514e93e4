"""Research and maintenance tools beside the grid: ``make perf`` (perf.py), the T* fit
(fit_temperature.py), the masking audit's known-answer battery (selfcheck.py)."""

# The two commands a user types: `make bench` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Offline copy of CIFAR-10 beside the checkout, used when BENCH_DATA is not set.
SHARED_DATA := $(abspath ../shared/data/cifar10-jpeg75)
BENCH_DATA ?= $(if $(wildcard $(SHARED_DATA)/train),$(SHARED_DATA),)
export BENCH_DATA
PROFILE ?= quick
# ISA=avx2: torch's vector kernels, oneDNN's convolutions and MKL's matrix products capped at
# AVX2, the slow box's, for any target (`make perf ISA=avx2`). On a newer CPU that gives the slow
# box's instruction set, not its speed (its clock and caches stay this CPU's); every record's
# device names the cap.
ISA ?=
ifneq ($(ISA),)
ifneq ($(ISA),avx2)
$(error ISA=$(ISA): only ISA=avx2 is a value that torch, oneDNN and MKL all take; leave ISA out for this CPU's own)
endif
export ATEN_CPU_CAPABILITY := $(ISA)
export ONEDNN_MAX_CPU_ISA := $(ISA)
# MKL takes the upper-case name
export MKL_ENABLE_INSTRUCTIONS := AVX2
endif
# more options for `make bench`, e.g. BENCH_ARGS="--executor ray --address auto --store /shared/grid"
BENCH_ARGS ?=

.PHONY: bench test perf report screenshot clean-cache venv gpu

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,robustbench,ray]'
	touch $@

venv: $(VENV)/.installed

bench: $(VENV)/.installed
	$(PY) -m bench.run --profile $(PROFILE) --model all $(BENCH_ARGS)

# pytest-xdist workers, one thread each, each test file on one worker (its module fixtures built
# once): one more than the cores, since many tests wait on processes they start (on the 2-core
# AVX2 box: 592 s with 3 workers, 629 s with 2, 974 s without; on a faster AVX2 EPYC, 515 s with 4
# against 465 s with 3)
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print((os.cpu_count() or 1) + 1)")
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

perf: $(VENV)/.installed
	$(PY) -m bench.tools.perf

# results/$(PROFILE)/index.html (and the tables, plots, RobustBench exports) rebuilt from the store:
# nothing is measured. A PROFILE that is a TOML file wrote results/<its name key, else its stem>, as
# `make bench PROFILE=file.toml` does (tomllib: this needs no venv and loads no torch).
ifneq ($(filter %.toml,$(PROFILE)),)
REPORT_DIR = results/$(shell $(PYTHON) -c 'import pathlib, sys, tomllib; p = pathlib.Path(sys.argv[1]); \
	print(tomllib.loads(p.read_text(encoding="utf-8-sig")).get("name", p.stem))' \
	'$(PROFILE)' 2>/dev/null || echo $(basename $(notdir $(PROFILE))))
else
REPORT_DIR = results/$(PROFILE)
endif
report: $(VENV)/.installed
	$(PY) -m bench.report --results $(REPORT_DIR)

# docs/report.png, the README's picture: results/quick/index.html as headless chromium draws it (the
# PNG records which leaderboard.csv and page it shows; tests/test_committed_results.py fails when they move)
screenshot: $(VENV)/.installed
	$(PY) scripts/report_screenshot.py results/quick docs/report.png

# The one command of a GPU window, run on the device machine (whose python3 has torch; no venv
# there): the gpu profile under a wall-clock limit, results packed into $OUT. Fill .whl/ here first
# with `bash scripts/gpu_wheels.sh`; scripts/gpu_run.sh says what comes back.
gpu:
	bash scripts/gpu_run.sh

clean-cache:
	rm -rf .cache

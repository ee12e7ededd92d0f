# textgen: `make run` and `make test` set themselves up (make install) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

# uv resolves and installs the TFX stack in about a minute (pip backtracks for hours).
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif

.PHONY: install run test lock wheel clean help bench bench-quality bench-levers

help:
	@echo "make run ARGS='--data FILE ...'   run the pipeline (see: .venv/bin/textgen run --help)"
	@echo "make test                         the whole test suite (sets up .venv first)"
	@echo "make bench                        quick benchmarks (30-45 min) → docs/benchmarks.md"
	@echo "make bench-quality                the long model-quality run (hours; resumable)"
	@echo "make install                      create/refresh .venv from requirements/lock.txt"
	@echo "make wheel                        build dist/textgen-*.whl (what images and workers install)"
	@echo "make lock                         re-resolve pyproject.toml's dependencies"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

$(STAMP): requirements/lock.txt pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(VENV)/bin/python -r requirements/lock.txt
	$(UV) pip install --quiet --python $(VENV)/bin/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/textgen run $(ARGS)

# One pytest worker per core (pytest-xdist), a test file per worker at a time, so that a
# module's fixtures are made once; the suite's pipeline runs are mostly single-threaded.
# Files go out in collection order, the longest first (tests/conftest.py's LONGEST_FIRST).
# The slowest tests' times are listed at the end: where the suite's minutes go.
test: install
	$(VENV)/bin/pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=15 tests

# Benchmarks measure, they do not pass or fail; results go to bench/results/, the report
# to docs/benchmarks.md. One at a time: they compete for the same cores.
bench: install
	$(VENV)/bin/python -m bench.pipeline_cost
	$(VENV)/bin/python -m bench.training
	$(VENV)/bin/python -m bench.generation
	$(VENV)/bin/python -m bench.serving_load
	$(VENV)/bin/python -m bench.serving_mixed
	$(VENV)/bin/python -m bench.serving_swap
	$(VENV)/bin/python -m bench.report

bench-quality: install
	$(VENV)/bin/python -m bench.quality $(ARGS)
	$(VENV)/bin/python -m bench.report

# Training levers through `textgen run` itself (hours; resumable), e.g.
# make bench-levers ARGS="--levers auto_30,auto_30_carry --seeds 42,7"
bench-levers: install
	$(VENV)/bin/python -m bench.levers $(ARGS)
	$(VENV)/bin/python -m bench.report

# The package installed like any other: deploy/install.sh puts it into an image or a worker.
wheel: | $(UV)
	$(UV) build --quiet --wheel --out-dir dist

# Every extra (Airflow, Vertex, the tests' and benchmarks' tools): one environment for all.
lock: | $(UV)
	$(UV) pip compile --quiet --python-version 3.11 --all-extras pyproject.toml -o requirements/lock.txt

clean:
	rm -rf $(VENV) .tools tfx_root serving_model dist

# Each target creates .venv and installs the project if it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all bench lint format install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,slurm]'
	touch $(STAMP)

install: $(STAMP)

## The main job: pretrain the tiny synthetic CLIP if needed, sweep finetune/LwF/VR-LwF, print the comparison.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## The default test suite (fast; slow tests are deselected).
test: $(STAMP)
	$(BIN)/python -m pytest

## Slow tests only: real SLURM sweeps, preemption and requeue (start one with scripts/slurm_local.sh start).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

## Lint (ruff), formatting check and types (mypy); CI fails on any of them. `make format` rewrites.
lint: $(STAMP)
	$(BIN)/ruff check clipcl_runner scripts tests
	$(BIN)/ruff format --check clipcl_runner scripts tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix clipcl_runner scripts tests
	$(BIN)/ruff format clipcl_runner scripts tests

bench: $(STAMP)
	$(BIN)/python scripts/bench.py --json outputs/bench/bench.json

clean:
	rm -rf $(VENV)

# Two commands on a fresh clone:  `make demo` (install + quickstart)  and  `make test` (install + all checks).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# The CPU build of torch first, so no dependency pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m raymlops.job +experiment=quickstart

lint: install
	$(BIN)/ruff check raymlops tests jobs benchmarks
	$(BIN)/ruff format --check raymlops tests jobs benchmarks

typecheck: install
	$(BIN)/mypy raymlops

test: lint typecheck
	$(BIN)/python -m pytest -q -ra

bench: install
	for b in benchmarks/[a-z]*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf .raymlops

# Two commands on a fresh clone:  `make demo` (install + quickstart)  and  `make test` (install + all checks).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python writes each module's bytecode cache the first time it imports it. Some machines (this project's
# CI among them) set PYTHONDONTWRITEBYTECODE=1; with pip's --no-compile below, every process (each Ray
# worker, each job subprocess) would then compile ray, torch and mlflow from source at every start: it
# doubled the test time. Unset here, the modules that are used compile once and are cached.
RUN := env -u PYTHONDONTWRITEBYTECODE

.PHONY: install system-deps demo test lint typecheck unit bench bench-smoke gpu-check clean baselines

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# The CPU build of torch first, so no dependency pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	# --no-compile: byte-compiling every file of torch, ray and mlflow costs minutes on 2 cores; the
	# modules that are imported compile on first import instead (see RUN above).
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	# Byte-compile, once and in one process, what every test, job and Ray worker process imports: on a
	# fresh clone the suite's first processes otherwise compiled torch, ray and mlflow concurrently, each
	# its own copy (a fresh clone's suite ran 1,877 s against 1,540 s with the caches warm).
	$(RUN) $(BIN)/python -c "import torch, ray, ray.data, ray.train.torch, ray.train.xgboost, ray.tune, ray.serve, \
	  mlflow, xgboost, onnx, onnxruntime, onnxmltools, shap, sklearn, optuna, deltalake, fastapi, httpx, \
	  hydra, tritonclient.http, raymlops.job, raymlops.cli.main, raymlops.serving.app"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(RUN) $(BIN)/python -m raymlops.job +experiment=quickstart

lint: install
	$(BIN)/ruff check raymlops tests jobs benchmarks
	$(BIN)/ruff format --check raymlops tests jobs benchmarks

typecheck: install
	$(BIN)/mypy raymlops

# Debian packages the tests run for real: Prometheus (a serving test checks that a real server scrapes
# our metrics), redis-server (the Redis online store) and PostgreSQL (the MLflow tracking server's
# store in tests/integration/test_object_storage.py; its binaries are not on PATH, hence the path).
# Only what is missing is installed.
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -z "$$missing" ] || { \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

# Two pytest processes (pytest-xdist), each with its own local Ray, one test file at a time: see pyproject.
# TEST_WORKERS=0 runs the suite in this one process. Files go out slowest first (tests/conftest.py,
# SLOW_FILES_FIRST; xdist's own reorder would put the many-test unit files first and a 2-test, 150 s file
# last). PYTEST_ARGS adds options, e.g. PYTEST_ARGS=--durations=0 to re-measure that order.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=

# The Debian packages install while pip installs the project (then ruff and mypy run side by side): on a
# new machine the two installs are most of the time before the first test, and neither needs the other.
test:
	$(MAKE) --no-print-directory -j2 lint typecheck system-deps
	$(RUN) $(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=40 $(PYTEST_ARGS) -m "not bench_pipeline"

# The pipeline and scaling benchmarks at smoke size (each runs whole pipelines in child processes, 4 minutes
# together): outside `make test` so CI stays under 30 minutes on 2 cores.
bench-smoke: install
	$(RUN) $(BIN)/python -m pytest -q -ra -n 0 -m bench_pipeline tests/integration/test_benchmarks_smoke_pipeline.py

# The GPU paths (tests/integration/test_gpu.py, docs/gpu.md): skipped unless torch sees a CUDA device, so a
# CUDA build of torch must replace the CPU one make install puts in the venv.
gpu-check: install
	$(RUN) $(BIN)/python -m pytest -q -ra -n 0 -m gpu

# The baselines users would pick instead (Evidently, pandera, MLServer), which drift.py, validation.py and
# serve_vs_raw.py run beside ours when this venv exists. Their own venv, never .venv: they pin pydantic,
# fastapi, uvicorn, grpcio and pandas against Ray's. pandas 2: Evidently 0.7 does not import with pandas 3;
# onnxruntime as in .venv, so that both sides run the same graph on the same runtime. uvloop < 0.22: with
# 0.22 MLServer 1.7's inference worker dies at start (asyncio.get_event_loop() raises in it).
BASELINES_VENV ?= .venv-baselines
baselines:
	$(PYTHON) -m venv $(BASELINES_VENV)
	$(BASELINES_VENV)/bin/python -m pip install -q -U pip
	$(BASELINES_VENV)/bin/python -m pip install -q evidently==0.7.23 pandera==0.36.0 mlserver==1.7.1 \
	  onnxruntime==1.31.1 pyarrow==26.0.1 "pandas>=2.2,<3" "uvloop<0.22"

bench: install
	for b in benchmarks/[a-z]*.py; do $(RUN) $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf .raymlops

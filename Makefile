# One command each: setup, demo, serve, test, lint, benchmarks.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo serve test test-fast lint format bench-storage bench-faults bench-security \
	bench-load bench-perf bench-memory bench-gpu bench-scale-out bench-quality-setup bench-quality-quick bench-quality-large bench-quality bench-defaults-sweep clean lock

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel lies on disk; without it first, pip would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[engine,test,client]"
	# lm-eval ships the MMLU task files the data-source tests read (files only: no dependencies).
	$(PY) -m pip install -q --no-deps lm-eval
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) scripts/demo.py

serve: setup
	$(PY) -m app.launcher

test: setup
	bash scripts/ensure_services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not e2e"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app worker tov_engine tov_formats tov_plan
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-storage: setup
	bash scripts/ensure_services.sh
	$(PY) -m benchmarks.storage.bench_scores

bench-faults: setup
	$(PY) -m benchmarks.faults.run_fault_suite
	$(PY) -m benchmarks.faults.run_r1_real_engine

bench-security: setup
	bash scripts/ensure_services.sh
	$(PY) -m benchmarks.security.run_schemathesis

bench-load: setup
	bash scripts/ensure_services.sh
	$(PY) -m benchmarks.load.poll_status --rate 500 --seconds 20

bench-perf: setup
	bash scripts/ensure_services.sh
	$(PY) scripts/prepare_model.py smollm2-135m-instruct --dest .cache/models
	$(PY) -m benchmarks.perf.scale_out
	$(PY) -m benchmarks.perf.bench_perf

bench-memory: setup
	# the memory model against measured peaks (135M, 360M, 1B from configs; ~15 min on 2 cores)
	$(PY) -m benchmarks.perf.memory_model

# For a GPU machine: plain python3 (no venv there; its python3 holds torch, transformers and peft),
# no network, models built from configs. Under 8 minutes on one H100; benchmarks/results/gpu.json.
# `PYTHONPATH=. python3 -m benchmarks.gpu.run --small` is the CPU mode (tests/benchmarks).
bench-gpu:
	PYTHONPATH=. python3 -m benchmarks.gpu.run

bench-scale-out: setup
	bash scripts/ensure_services.sh
	$(PY) -m benchmarks.perf.scale_out

# The quality benchmark needs real data from Debian and PyPI packages (files only) and two models.
bench-quality-setup: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m pip install -q --no-deps lm-eval
	dpkg -s fortunes bsdgames dict-foldoc dict-devil dict-gcide >/dev/null 2>&1 || \
	  (apt-get update -q && apt-get install -y -q fortunes fortunes-min bsdgames dict-foldoc \
	   dict-jargon dict-devil dict-gcide)
	$(PY) scripts/prepare_model.py smollm2-135m-instruct --dest .cache/models
	$(PY) scripts/prepare_model.py all-minilm-l6-v2 --dest .cache/models

bench-quality-quick: bench-quality-setup
	$(PY) -m benchmarks.quality.run --mode quick

bench-quality-large: bench-quality-setup
	$(PY) -m benchmarks.quality.run --mode large

bench-quality: bench-quality-setup
	$(PY) -m benchmarks.quality.run --mode full

# ToV's knobs chosen on validation rows only (one half selects, the other is scored); SEEDS=2 etc.
bench-defaults-sweep: bench-quality-setup
	$(PY) -m benchmarks.quality.defaults_sweep --seeds $(or $(SEEDS),1)

# The images install from these hashed lock files (Linux x86_64, Python 3.11); rerun after editing
# pyproject.toml's dependencies. The worker's lock pins PyPI's Linux torch, the CUDA build.
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes -q
lock: setup
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements/api.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra engine $(LOCK_FLAGS) -o requirements/worker.lock

clean:
	rm -rf .tov .pytest_cache .mypy_cache .ruff_cache

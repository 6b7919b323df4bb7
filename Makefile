# flywheel: `make run` (install + the whole lifecycle on the digits example) and `make test` (install + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# GX Data Docs' scripts and stylesheets: package.json and package-lock.json there, node_modules/ beside them
DATA_DOCS_ASSETS := vendor/data-docs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# espeak-ng and festival (with its voices): the demo's training speech; flite: the held-out speech engine of the
# golden batch (examples/digits/speech.py); festvox-czech-krb: a voice benchmarks/robust_speech.py tries, not in
# training (speech.py FESTIVAL_TRIAL_VOICES); chromium: the dashboards' browser test (Playwright drives it, downloads none)
FESTIVAL_VOICES := festvox-kallpc16k festvox-kdlpc16k festvox-suopuhe-lj festvox-suopuhe-mv \
	festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-ca-ona-hts festvox-czech-krb
SYSTEM_PACKAGES := espeak-ng festival $(FESTIVAL_VOICES) flite chromium

# Telemetry off for every process make starts (see features/env.py for the full list).
export DO_NOT_TRACK=1
export MLFLOW_DISABLE_TELEMETRY=true
export DVC_NO_ANALYTICS=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export GX_ANALYTICS_ENABLED=false
export FEAST_USAGE=False

.PHONY: install system-deps run test demo-data golden ui docs clean-state up down

install: system-deps $(VENV)/.installed $(DATA_DOCS_ASSETS)/node_modules/.installed

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $$missing >/dev/null; }; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, exactly pinned, through pip: the CPU build on this machine's disk (pip's find-links), so no
	# dependency pulls a CUDA build. uv comes with it and installs the rest: the same versions pip resolves, in a
	# fraction of the time (142 s for pip here). pyproject.toml pins torch==2.13.0, so uv keeps the installed build;
	# where uv cannot run, pip does the same install. --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE
	# is set (this machine sets it), nothing else writes the .pyc files, and every process would compile every
	# module it imports again (the suite's test_dvc_cli: 224 s without them, about 130 s with).
	$(BIN)/pip install -q torch==2.13.0 uv==0.13.9
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e ".[dev]" || $(BIN)/pip install -q -e ".[dev]"
	touch $@

# GX Data Docs' scripts and stylesheets (jQuery, Bootstrap, bootstrap-table, vega, font-awesome): the npm packages of
# the versions GX's page templates load from public CDNs, which features/data_docs.py copies into each Data Docs site
# so that its pages render offline. Without npm the install goes on and the pages keep their CDN links (with a warning).
$(DATA_DOCS_ASSETS)/node_modules/.installed: $(DATA_DOCS_ASSETS)/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix $(DATA_DOCS_ASSETS) --ignore-scripts --loglevel=error && touch $@; \
	else \
	  echo "npm not found: GX Data Docs will load their scripts from public CDNs (offline their tables stay empty);" \
	       "install Node.js and npm, then run make install again"; \
	fi

# The digits example's golden batch (params.yaml task.golden): the gate's fixed test set, every row labelled.
# Every run checks it at start-up, and the tests load the root params.yaml, so it comes first.
GOLDEN := examples/digits/data/golden

$(GOLDEN)/manifest.jsonl: | install
	$(BIN)/flywheel demo-data --golden --out $(GOLDEN)

golden: $(GOLDEN)/manifest.jsonl

data/landing/batch-001/manifest.jsonl: | install
	$(BIN)/flywheel demo-data --out data/landing/batch-001 --seed 1

data/landing/batch-002/manifest.jsonl: | install
	$(BIN)/flywheel demo-data --out data/landing/batch-002 --seed 2

demo-data: data/landing/batch-001/manifest.jsonl data/landing/batch-002/manifest.jsonl

# Two lifecycle runs: the first trains and deploys a champion, the second trains a challenger
# on both batches, gates it against that champion and checks the new batch for drift.
run: install golden demo-data
	$(BIN)/flywheel run --source data/landing/batch-001
	$(BIN)/flywheel run --source data/landing/batch-002

# Three pytest workers, each taking whole test files (--dist loadfile keeps a module's fixtures in one
# process): much of the suite waits on servers, subprocesses and leases (two workers left the 2 cores idle
# 11 % of the time), so a third fills those waits; each worker's math libraries get one thread (tests/conftest.py).
# Files are handed out in the order tests/conftest.py puts them (the slow ones first), not xdist's default
# (most tests first, which left a long one-test file running alone at the end).
TEST_WORKERS ?= 3

test: install golden
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The documentation site (docs/, mkdocs.yml) into site/; `$(BIN)/mkdocs serve` previews it.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

ui: install
	$(BIN)/flywheel ui

clean-state:
	rm -rf .flywheel data/landing $(GOLDEN)

# The scaled-out stack (docker-compose.yml): returns once every service reports healthy.
# Then `set -a; . ./stack.env; set +a` points this shell's flywheel at it (docs/reference/stack.md).
up:
	@test -f .env || { echo "no .env: cp .env.example .env and set every password in it"; exit 1; }
	docker compose up -d --build --wait

# Stops the stack; its named volumes (databases, buckets, FLYWHEEL_HOME) stay. `docker compose down -v` removes them.
down:
	docker compose down

# usage_orchestration — every set-up step lives here, so a fresh clone needs only python3.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The FinOps Foundation's FOCUS validator pins older pandas/pandera (numpy 1.x, hence a pyarrow
# that still reads Parquet on numpy 1.x): its own venv, used by `make test`.
FOCUS_VENV := .venv-focus
FOCUS_STAMP := $(FOCUS_VENV)/.installed
FOCUS_VALIDATOR := focus-validator==1.0.0
export DAGSTER_HOME ?= $(CURDIR)/.dagster

# Sandbox credentials; real ones in the environment win.
export PHALA_API_KEY ?= sandbox-phala-key
export NEON_API_KEY ?= sandbox-neon-key
export FORGE_EMAIL ?= finance-bot@example.com
export FORGE_API_TOKEN ?= sandbox-forge-token
export LEDGER_API_TOKEN ?= sandbox-ledger-token
export PAGERDUTY_ROUTING_KEY ?= sandbox-routing-key-000000000000
export SLACK_WEBHOOK_URL ?= http://127.0.0.1:8765/slack/services/T0DEMO/B0DEMO/demo

.PHONY: demo test dev sandbox lint validate bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(FOCUS_STAMP):
	$(PYTHON) -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/python -m pip install --quiet "$(FOCUS_VALIDATOR)" "multimethod<1.12" "pyarrow<23"
	touch $(FOCUS_STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## demo: sandbox + 30 days of every asset through Dagster into .dagster/, sensors, summary
demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/usage-orchestration demo

# In `make test` the validator tests of test_focus.py must run (they skip only without the venv).
test: export USAGE_TEST_FOCUS_VALIDATOR := $(CURDIR)/$(FOCUS_VENV)/bin/focus-validator

## test: the whole suite (SQLite; PostgreSQL too when USAGE_TEST_POSTGRES_URL is set)
test: $(STAMP) $(FOCUS_STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/ruff check usage_orchestration usage_orchestration_tests benchmarks
	$(BIN)/ruff format --check usage_orchestration usage_orchestration_tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/pytest -q -p no:cacheprovider

## dev: the Dagster UI on 127.0.0.1:3000 over .dagster/, with the sandbox running
# A sandbox port already taken (another `make dev` or `make demo`) fails here, never shared; so
# does a sandbox that dies on start.
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/usage-orchestration sandbox --check-port
	@$(BIN)/usage-orchestration sandbox & SANDBOX=$$!; \
	trap "kill $$SANDBOX 2>/dev/null" EXIT INT TERM; \
	sleep 2; kill -0 $$SANDBOX 2>/dev/null || { echo "make dev: the sandbox did not start" >&2; exit 1; }; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

sandbox: $(STAMP)
	$(BIN)/usage-orchestration sandbox

validate: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster definitions validate -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check usage_orchestration usage_orchestration_tests benchmarks
	$(BIN)/ruff format --check usage_orchestration usage_orchestration_tests benchmarks
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf .dagster .data

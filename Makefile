# One vocabulary for people, hooks and CI. `make run` and `make test` do all the set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: install run test lint unit integration demo ui bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the pinned dependencies

run: install       ## the training pipeline on the embedded defaults (dvc repro, stages in one process)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/driftloop run

test: install      ## the whole test suite (PostgreSQL tests skip with a reason when none is reachable)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

integration: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check src flows tests benchmarks deploy
	$(BIN)/ruff format --check src flows tests benchmarks deploy

demo: install      ## a simulated production year: monitor, alert, retrain
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/driftloop demo

ui: install        ## MLflow UI on 127.0.0.1:5000
	$(BIN)/driftloop ui

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/bench_pipeline.py

clean:             ## remove run state (not the venv)
	rm -rf mlflow.db mlartifacts mlruns optuna reports/monitoring reports/demo reports/alerts.jsonl

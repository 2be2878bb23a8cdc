# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint clean venv

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

## Create or update .venv (used by bench/run).
venv: $(STAMP)

## Start the service on http://127.0.0.1:8000 (SQLite by default; migrations applied; /docs).
PORT ?= 8000
run: $(STAMP)
	$(BIN)/python -m app serve --host 127.0.0.1 --port $(PORT)

## Run the whole test suite (SQLite, and PostgreSQL when reachable).
test: $(STAMP)
	$(BIN)/python -m pytest

## The suite without the slow tests (real servers, fuzzing, browser, outages, replicas).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

## ruff, mypy and hadolint, as CI runs them.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

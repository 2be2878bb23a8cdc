# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
# Each installs what it needs, no more: `make run` the service's own dependencies (about a
# third of the full environment), `make test` adds the `test` extra, `make lint` the `dev`
# extra (pyproject.toml), `make venv` all of them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS := $(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# One stamp per set of extras, named after the dependency files' checksum: a change to them
# installs again.
stamp = $(VENV)/.installed-$(1)-$(DEPS)
RUN_STAMP := $(call stamp,run)
TEST_STAMP := $(call stamp,test)
DEV_STAMP := $(call stamp,dev)

.PHONY: run test test-fast lint clean venv

# install(name, pip target): create .venv if needed, install, and stamp.
define install
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '$(2)'
	@rm -f $(VENV)/.installed-$(1)-* && touch $(call stamp,$(1))
endef

$(RUN_STAMP):
	$(call install,run,.)

$(TEST_STAMP):
	$(call install,test,.[test])

$(DEV_STAMP):
	$(call install,dev,.[dev])

## Create or update .venv with every extra (used by bench/run).
venv: $(RUN_STAMP) $(TEST_STAMP) $(DEV_STAMP)

## Start the service on http://127.0.0.1:8000 (SQLite by default; migrations applied; /docs).
PORT ?= 8000
run: $(RUN_STAMP)
	$(BIN)/python -m app serve --host 127.0.0.1 --port $(PORT)

## Run the whole test suite (SQLite, and PostgreSQL when reachable).
test: $(TEST_STAMP)
	$(BIN)/python -m pytest

## The suite without the slow tests (real servers, fuzzing, browser, outages, replicas).
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not slow"

## ruff, mypy and hadolint, as CI runs them.
lint: $(TEST_STAMP) $(DEV_STAMP)  # mypy reads the tests too
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

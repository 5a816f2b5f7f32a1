# SpotOn — `make demo` runs the product on embedded defaults, `make test` runs the whole test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo serve test lint clean

setup: $(STAMP)

# Idempotent: re-installs only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/spoton demo

serve: setup
	$(BIN)/spoton serve

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check app tests scripts
	$(BIN)/mypy app

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

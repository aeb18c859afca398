# The two commands from the README:
#   make demo   set everything up and run the operator on the local control plane with the examples
#   make test   set everything up and run the whole test suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test unit e2e lint crds down clean bench

$(BIN)/modelreg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Python deps, then the control-plane binaries (built once, cached in ~/.cache/modelreg).
setup: $(BIN)/modelreg
	$(BIN)/modelreg devcluster build

demo: setup
	$(BIN)/modelreg demo

test: setup lint
	$(BIN)/python -m pytest tests

unit: $(BIN)/modelreg
	$(BIN)/python -m pytest tests/unit

e2e: setup
	$(BIN)/python -m pytest tests/e2e

lint: $(BIN)/modelreg
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy

crds: $(BIN)/modelreg
	$(BIN)/modelreg generate-crds --out crds

bench: setup
	$(BIN)/python bench/run.py

down:
	$(BIN)/modelreg devcluster down

clean: down
	rm -rf $(VENV)

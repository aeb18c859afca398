# The two commands from the README:
#   make demo   set everything up and run the operator on the local control plane with the examples
#   make test   set everything up and run the whole test suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system-packages demo test unit e2e lint crds down clean bench bench-scale

$(BIN)/modelreg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Python deps, the Debian packages, then the control-plane binaries (built once, cached in ~/.cache/modelreg).
setup: $(BIN)/modelreg system-packages
	$(BIN)/modelreg devcluster build

# The Debian packages of the real node (containerd, runc, CNI plugins, ...) and of
# the images (docker-registry, buildah, podman, skopeo, debootstrap): the lists
# and the apt-get logic live in operator/modelreg/devcluster/packages.py.
# Installs what is missing where it runs as root; exit status 3 means "missing,
# but not installable here" (not root, or no apt-get): setup goes on, since only
# the image and real-node tests need them.
system-packages: $(BIN)/modelreg
	$(BIN)/modelreg devcluster packages || [ $$? = 3 ]

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

# 1k, 5k and 10k versions (minutes each; the 10k case needs ~1 GB free).
bench-scale: setup
	$(BIN)/python bench/scale.py

down:
	$(BIN)/modelreg devcluster down

clean: down
	rm -rf $(VENV)

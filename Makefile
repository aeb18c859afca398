# The two commands from the README:
#   make demo   set everything up and run the operator on the local control plane with the examples
#   make test   set everything up and run the whole test suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system-packages demo test unit e2e lint crds down clean bench

# Debian packages for the image registry, building the operator image here and
# running it (buildah, podman with runc, skopeo, debootstrap). Installed only
# where apt-get runs as root and one of them is missing.
APT_PACKAGES := docker-registry buildah podman runc skopeo debootstrap

$(BIN)/modelreg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Python deps, then the control-plane binaries (built once, cached in ~/.cache/modelreg).
setup: $(BIN)/modelreg system-packages
	$(BIN)/modelreg devcluster build

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	elif [ -n "$$missing" ]; then echo "not installed (the image tests need them): $$missing"; fi

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

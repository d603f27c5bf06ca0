# mlendpoints — every target installs what it needs (see scripts/setup.sh).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
# cargo (images/serving/native) where rustup puts it, for shells that did not source its profile.
export PATH := $(BIN):$(PATH):$(HOME)/.cargo/bin
PYTEST_ARGS ?=

.PHONY: setup lint test unit integration e2e e2e-kind demo crds images cluster-up cluster-down cluster-status bench clean

setup: $(VENV)/.installed

NATIVE_TARGET := $(or $(MLENDPOINTS_CACHE),$(HOME)/.cache/mlendpoints)/native/target
NATIVE_SOURCES := $(wildcard images/serving/native/src/*.rs) images/serving/native/Cargo.toml \
  images/serving/native/Cargo.lock images/serving/native/pyproject.toml images/serving/native/mlendpoints_native.pyi

$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup.sh scripts/azmlinfsrv-venv.sh tests/azmlinfsrv/requirements.txt \
  scripts/native-wheel.sh $(NATIVE_SOURCES)
	bash scripts/setup.sh $(VENV)
	@touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd images/serving/native && cargo fmt --check \
	  && CARGO_TARGET_DIR=$(NATIVE_TARGET) cargo clippy --locked --release -q -- -D warnings

# Everything: lint, then unit + integration + end-to-end in one pytest run.
# Tests that need the local cluster, the images or an MLflow server start them
# themselves (session fixtures); MLENDPOINTS_SKIP_CLUSTER=1 opts out of the
# cluster layer explicitly (skips say so).
test: lint
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests e2e

unit: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/unit

integration: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/integration

e2e: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS) e2e

# The e2e suite on a kind cluster (e2e/kind/run.sh); KIND_NODE_IMAGE picks the node image.
e2e-kind: setup
	bash e2e/kind/run.sh

demo: setup
	$(PY) -m examples.demo

crds: setup
	$(PY) -m mlendpoints.api.crdgen crds charts/mlendpoints/crds

images: setup
	bash images/build.sh

cluster-up: setup
	bash e2e/localcluster/cluster.sh up

cluster-down:
	bash e2e/localcluster/cluster.sh down

cluster-status:
	bash e2e/localcluster/cluster.sh status

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

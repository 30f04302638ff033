# Everything runs from a virtualenv in .venv that these targets create on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench lint docs dist wheel-smoke protos etcd34 clean chaos chaos-short chaos-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

## demo: start a local 3-member etcd, run candidates and an observer, show failovers
demo: $(STAMP)
	$(BIN)/geeh demo

## test: the default suite (unit + integration against real etcd, lint, types)
test: $(STAMP)
	$(BIN)/ruff check src tests scripts examples benchmarks docs chaos
	$(BIN)/mypy
	$(BIN)/pytest -q

## test-slow: fault-injection tests against a 3-member cluster
test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

## chaos: a seeded fault-injection soak test and its checker (make chaos SECONDS=600 SEED=7)
SECONDS ?= 600
SEED ?= 1
chaos: $(STAMP)
	$(BIN)/python -m chaos --seconds $(SECONDS) --seed $(SEED)

## chaos-short: the short chaos run CI makes (60 s, fixed seed)
chaos-short: $(STAMP)
	$(BIN)/python -m chaos --seconds 60 --seed 1

## chaos-check: show that the checker works: correct workers pass, broken ones fail (2 runs)
chaos-check: $(STAMP)
	$(BIN)/pytest -q -m slow tests/test_chaos.py

## bench: benchmarks side by side with etcdctl elect; results JSON, plots, BENCHMARKS.md
bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts examples benchmarks docs chaos
	$(BIN)/ruff format --check src tests scripts examples benchmarks docs chaos
	$(BIN)/mypy

## docs: the documentation site in docs/_build/html; warnings are errors
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

## dist: an sdist and a wheel in dist/, checked by twine
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

## wheel-smoke: build the wheel, install it in a clean venv, run an election with it
wheel-smoke: $(STAMP)
	scripts/wheel-smoke.sh

## protos: regenerate src/geeh/_proto from the .proto files beside them
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

## etcd34: Debian's etcd 3.4, the second server version the tests run against (needs root)
etcd34:
	@if [ ! -x /usr/bin/etcd ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache docs/_build dist build

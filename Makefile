# Everything runs from a virtualenv in .venv that these targets create on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench lint protos etcd34 clean chaos chaos-short chaos-check

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
	$(BIN)/ruff check src tests scripts examples benchmarks chaos
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

## bench: benchmarks side by side with etcdctl elect; writes BENCHMARKS.md
bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts examples benchmarks chaos
	$(BIN)/ruff format --check src tests scripts examples benchmarks chaos
	$(BIN)/mypy

## protos: regenerate src/geeh/_proto from the .proto files beside them
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

## etcd34: Debian's etcd 3.4, the second server version the tests run against (needs root)
etcd34:
	@if [ ! -x /usr/bin/etcd ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

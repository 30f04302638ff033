# Everything runs from a virtualenv in .venv that these targets create on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

# pytest-xdist workers, each with its own etcd servers. The default suite mostly waits on
# etcd and on timeouts (it uses under one core on average), so it runs more workers than
# there are cores; so does the fault-injection suite (about half a core with two workers).
WORKERS ?= 3
SLOW_WORKERS ?= 3
# The fast inner loop: unit tests and the scripted fakes, no etcd (make check).
CHECK_TESTS := tests/test_units.py tests/test_keys.py tests/test_win_rule.py \
	tests/test_leadership_units.py tests/test_stream_faults.py tests/test_chaos_checker.py \
	tests/test_protos.py tests/test_imports.py

.PHONY: demo check test test-slow bench bench-beat redis-server lint docs dist wheel-smoke protos etcd34 clean chaos chaos-short chaos-sharded-short chaos-check partition zookeeper

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The docs need the docs extra only (Sphinx, its theme, MyST), not the whole dev extra.
$(DOCS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

## demo: start a local 3-member etcd, run candidates and an observer, show failovers
demo: $(STAMP)
	$(BIN)/geeh demo

## check: the fast inner loop (under a minute): lint, unit tests and the scripted fakes
check: $(STAMP)
	$(BIN)/ruff check src tests scripts examples benchmarks docs chaos
	$(BIN)/pytest -q -n auto $(CHECK_TESTS)

## test: the default suite (unit + integration against real etcd, lint, types)
test: $(STAMP)
	$(BIN)/ruff check src tests scripts examples benchmarks docs chaos
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(WORKERS)

## test-slow: fault-injection tests against a 3-member cluster
test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow -n $(SLOW_WORKERS)

## chaos: a seeded fault-injection soak test and its checker (make chaos SECONDS=600 SEED=7)
SECONDS ?= 600
SEED ?= 1
chaos: $(STAMP)
	$(BIN)/python -m chaos --seconds $(SECONDS) --seed $(SEED)

## chaos-short: the short chaos run CI makes (60 s, fixed seed)
chaos-short: $(STAMP)
	$(BIN)/python -m chaos --seconds 60 --seed 1

## chaos-sharded-short: the short sharded chaos run CI makes (60 s, fixed seed)
chaos-sharded-short: $(STAMP)
	$(BIN)/python -m chaos --sharded --seconds 60 --seed 1

## partition: rebalancing shards against kazoo's SetPartitioner (needs Debian's zookeeper)
partition: $(STAMP) zookeeper
	$(BIN)/python -m benchmarks.partition

## chaos-check: show that the checker works: correct workers pass, broken ones fail (2 runs)
chaos-check: $(STAMP)
	$(BIN)/pytest -q -m slow -n $(SLOW_WORKERS) tests/test_chaos.py

## bench: benchmarks side by side with etcdctl elect; results JSON, plots, BENCHMARKS.md
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## bench-beat: Celery beat on gee-h against celery-redbeat (3 replicas each, faults; ~6 min)
bench-beat: $(STAMP) redis-server
	$(BIN)/pip install -q -e ".[bench-beat]"
	$(BIN)/python -m benchmarks.beat

## redis-server: Debian's redis-server, which bench-beat starts on a free port (needs root)
redis-server:
	@if ! command -v redis-server >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
		else \
			echo "bench-beat needs redis-server: sudo apt-get install redis-server" >&2; exit 1; \
		fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts examples benchmarks docs chaos
	$(BIN)/ruff format --check src tests scripts examples benchmarks docs chaos
	$(BIN)/mypy

## docs: the documentation site in docs/_build/html; warnings are errors
docs: $(DOCS_STAMP)
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

## zookeeper: Debian's ZooKeeper, the other side of the partition benchmark (needs root)
zookeeper:
	@if [ ! -x /usr/share/zookeeper/bin/zkServer.sh ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache docs/_build dist build

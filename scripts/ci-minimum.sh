#!/usr/bin/env bash
# CI job: gee-h on the lowest grpcio and protobuf it supports (constraints/minimum.txt),
# and the lowest APScheduler of the apscheduler extra,
# with protobuf's default (upb) backend and then its pure-Python one. Installs into a
# clean temporary venv; runs the unit and protocol tests and a real election, observer
# and failover smoke subset against etcd; and the Celery beat tests on the lowest Celery
# (the newest runs in `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install -q --upgrade pip
# A wheel built from a copy, so no build files are left in the checkout.
git ls-files -z | tar --null -T - -cf - | (mkdir "$tmp/src" && tar -xf - -C "$tmp/src")
"$py" -m pip install -q -c constraints/minimum.txt "$tmp/src[test,celery]"
"$py" -m pip list 2>/dev/null | grep -E '^(grpcio|protobuf|APScheduler|celery) '

pytest=("$py" -m pytest -q -p no:cacheprovider)
workers=(-n "${WORKERS:-4}")  # pytest-xdist, each worker with its own etcd
smoke=(tests/test_protos.py tests/test_units.py tests/test_keys.py tests/test_election.py
  tests/test_observe.py tests/test_tls.py tests/test_fork.py tests/test_auth.py
  tests/test_apscheduler.py tests/test_health.py tests/test_celery_beat.py)
failover=(tests/test_failover.py -m slow -k "sigkill_of_the_pinned_member and etcd3.5")

echo "== minimum versions, default backend"
"$py" -W error -c "import geeh"
"${pytest[@]}" "${workers[@]}" "${smoke[@]}"
"${pytest[@]}" "${failover[@]}"

echo "== minimum versions, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python"
export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python
"$py" -W error -c "import geeh"
"${pytest[@]}" "${workers[@]}" tests/test_protos.py tests/test_election.py tests/test_observe.py

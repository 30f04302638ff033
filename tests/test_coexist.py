"""gee-h in one process with another etcd client from PyPI, imported before or after it.

The other clients register etcd's own types (mvccpb.KeyValue, etcdserverpb.*) in protobuf's
default pool, which refuses a second definition of a name: gee-h keeps its types in a pool
of its own. Each case runs in a fresh interpreter, so the import order is real; there gee-h
campaigns and observes while the other client reads the leader's key with its own types.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import subprocess
import sys

import pytest

from geeh.testing import LocalEtcdCluster

# python-etcd3's protoc 3 gencode imports only with the pure-Python backend on protobuf 4+.
CLIENTS = ("etcd3aio", "aetcd", "etcd3")

_SCRIPT = """
import asyncio, importlib, sys
from google.protobuf import descriptor_pool

order, other_name, endpoint, name = sys.argv[1:]
if order == "geeh-first":
    import geeh
    other = importlib.import_module(other_name)
else:
    other = importlib.import_module(other_name)
    import geeh
from geeh._proto import kv_pb2

default = descriptor_pool.Default()
assert default.FindFileContainingSymbol("mvccpb.KeyValue").name != kv_pb2.DESCRIPTOR.name
assert kv_pb2.KeyValue.DESCRIPTOR.file.pool is not default
host, port = endpoint.rsplit(":", 1)


async def read_with_other(key):
    if other_name == "etcd3aio":
        async with other.Etcd3Client([endpoint]) as c:
            return (await c.kv.get(key)).kvs[0].value
    if other_name == "aetcd":
        c = other.Client(host, int(port))
        try:
            return (await c.get(key)).value
        finally:
            await c.close()
    c = other.client(host, int(port))
    try:
        return (await asyncio.to_thread(c.get, key))[0]
    finally:
        c.close()


async def main():
    async with geeh.Client([endpoint]) as client:
        election = client.election(name)
        seen, leader_seen = [], asyncio.Event()

        async def observe():
            async for leader in election.observe():
                seen.append(None if leader is None else leader.value)
                if leader is not None:
                    leader_seen.set()
                    if leader.value == b"proclaimed":
                        return

        observer = asyncio.create_task(observe())
        leadership = await asyncio.wait_for(election.campaign(b"elected", ttl=5), 10)
        await asyncio.wait_for(leader_seen.wait(), 10)
        stored = await asyncio.wait_for(read_with_other(leadership.key), 10)
        await leadership.proclaim(b"proclaimed")
        await asyncio.wait_for(observer, 10)
        await leadership.resign()
    print(repr((stored, seen)))


asyncio.run(main())
"""


@functools.cache
def _imports_alone(module: str) -> str | None:
    """None if `module` imports in a fresh interpreter without gee-h, else why not."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (the clients extra)"
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines() or ["?"]
    error = next((line for line in reversed(lines) if "Error" in line), lines[-1])
    return f"{module} does not import here even alone: {error}"


@pytest.mark.parametrize("order", ["geeh-first", "other-first"])
@pytest.mark.parametrize("other", CLIENTS)
def test_gee_h_elects_beside_another_etcd_client(
    etcd: LocalEtcdCluster, name: str, other: str, order: str
) -> None:
    why_not = _imports_alone(other)
    if why_not:
        pytest.skip(why_not)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, order, other, etcd.endpoints[0], name],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stored, seen = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert stored == b"elected"
    assert [value for value in seen if value is not None] == [b"elected", b"proclaimed"]

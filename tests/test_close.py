"""After close() nothing is left: no task, thread, stream, key or lease."""

from __future__ import annotations

import asyncio
import threading

from support.kv import joined, keys
from support.wait import within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import LEASE_TTL
from geeh.testing import LocalEtcdCluster


async def test_close_leaves_nothing_behind(etcd: LocalEtcdCluster, name: str) -> None:
    before_tasks = asyncio.all_tasks()
    before_threads = set(threading.enumerate())
    client = geeh.Client(etcd.endpoints)
    await client.connect()
    election = client.election(name)
    leadership = await election.campaign(b"leader", ttl=5)
    shared = await client.session(ttl=5)
    waiter = asyncio.ensure_future(election.campaign(b"waiter", session=shared))
    changes = election.observe()
    assert (await within(anext(changes), 5, "observer")) is not None
    async with geeh.Client(etcd.endpoints) as checker:
        await joined(checker, name, 2)
        await client.close()
        await client.close()  # twice is harmless
        await asyncio.gather(waiter, return_exceptions=True)
        assert leadership.lost.is_set()
        assert await keys(checker, name) == []
        for lease in (leadership.lease, shared.lease):
            ttl = await checker.core.transport.call(
                LEASE_TTL, rpc_pb2.LeaseTimeToLiveRequest(ID=lease)
            )
            assert ttl.TTL == -1, f"lease {lease:x} still alive after close()"
    left = {t for t in asyncio.all_tasks() - before_tasks if t is not asyncio.current_task()}
    assert not left, f"tasks left after close(): {left}"
    new_threads = set(threading.enumerate()) - before_threads
    new_threads = {t for t in new_threads if t.name.startswith("geeh")}
    assert not new_threads
    assert client.core.watches.active == 0

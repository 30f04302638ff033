"""Compaction at exactly a watch's start revision, against a real etcd.

etcd accepts a watch from the compaction revision, but the compaction dropped a deletion's
tombstone at that revision. The TCP proxy in front of the member delays the observer's link,
so that its watch's create is on its way while the leader is deleted and etcd compacted at
the deletion's revision: the watch must end with Compacted and the observer read again,
never go silent (it would report the old leader for good: nothing else is written). Both
paths: a watch created on an open stream, and one re-created when a cut stream re-opens.
"""

from __future__ import annotations

import asyncio

from support.kv import delete
from support.wait import within

import geeh
from geeh.net.retry import WATCH_PATH
from geeh.testing import EtcdCluster

DELAY = 0.5  # the observer's link, each way: time enough to delete and compact meanwhile


async def test_an_observer_created_at_the_compaction_revision_sees_the_leader_go(
    etcd: EtcdCluster, name: str
) -> None:
    proxy = etcd.proxy(0)
    direct = f"127.0.0.1:{proxy.target_port}"
    async with (
        geeh.Client([direct]) as admin,
        geeh.Client(etcd.endpoints, attempt_timeout=4 * DELAY + 2) as client,
    ):
        leader = await within(admin.election(name).campaign(b"L", ttl=30), 10, "a leader")
        observation = client.election(name).observe()
        proxy.delay(DELAY)
        try:
            # The observer read the leader at R, and its watch from R + 1 is on its way.
            seen = await within(anext(observation), 10, "the leader observed")
            assert seen is not None and seen.key == leader.key
            await delete(admin, leader.key)  # at R + 1
            await admin.compact()  # at the current revision: exactly R + 1
            gone = await within(anext(observation), 10, "the observer to see the leader go")
            assert gone is None
        finally:
            proxy.pass_through()
            await observation.aclose()


async def test_an_observer_resumed_at_the_compaction_revision_sees_the_leader_go(
    etcd: EtcdCluster, name: str
) -> None:
    """The same on the resume path: the observer's stream is cut, and the leader is deleted
    and etcd compacted just as the stream is re-opened (after any check made before it),
    while the re-created watch is on its way."""
    proxy = etcd.proxy(0)
    direct = f"127.0.0.1:{proxy.target_port}"
    async with (
        geeh.Client([direct]) as admin,
        geeh.Client(etcd.endpoints, attempt_timeout=4 * DELAY + 2) as client,
    ):
        leader = await within(admin.election(name).campaign(b"L", ttl=30), 10, "a leader")
        observation = client.election(name).observe()
        seen = await within(anext(observation), 10, "the leader observed")
        assert seen is not None and seen.key == leader.key
        done = asyncio.Event()

        async def delete_and_compact() -> None:
            await delete(admin, leader.key)  # at R + 1, where the observer's watch resumes
            await admin.compact()
            done.set()

        tasks: list[asyncio.Task[None]] = []

        def on_request(_endpoint: str, path: str) -> None:
            if path == WATCH_PATH and not tasks:
                tasks.append(asyncio.ensure_future(delete_and_compact()))

        proxy.delay(DELAY)
        client.core.transport.on_request = on_request
        try:
            proxy.cut()
            gone = await within(anext(observation), 15, "the observer to see the leader go")
            assert gone is None
            assert done.is_set()
        finally:
            proxy.pass_through()
            await observation.aclose()
            await asyncio.gather(*tasks, return_exceptions=True)

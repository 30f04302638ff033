"""Observers against a real etcd: every change, "no leader", compaction, reconnection."""

from __future__ import annotations

import asyncio

import pytest
from support.kv import joined
from support.wait import within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import TXN
from geeh.testing import LocalEtcdCluster, TcpProxy


async def test_observer_sees_every_change_and_no_leader(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    async with election.observe() as changes:
        assert await within(anext(changes), 5, "initial state") is None
        a = await election.campaign(b"a", ttl=5)
        b_task = asyncio.ensure_future(election.campaign(b"b", ttl=5))
        await joined(client, name, 2)
        seen = await within(anext(changes), 5, "a elected")
        assert seen is not None and seen.key == a.key
        await a.resign()
        b = await within(b_task, 5, "b elected")
        seen = await within(anext(changes), 5, "b reported")
        assert seen is not None and (seen.key, seen.value) == (b.key, b"b")
        await b.resign()
        assert await within(anext(changes), 5, "no leader") is None


async def test_waiting_candidate_is_never_reported(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    leader = await election.campaign(b"leader", ttl=5)
    async with election.observe() as changes:
        first = await within(anext(changes), 5, "initial state")
        assert first is not None and first.key == leader.key
        waiter = asyncio.ensure_future(election.campaign(b"waiter", ttl=5))
        await joined(client, name, 2)  # nothing must be reported for it
        await leader.proclaim(b"still me")  # an event after the waiter's join
        seen = await within(anext(changes), 5, "proclaim")
        assert seen is not None and (seen.key, seen.value) == (leader.key, b"still me")
        await leader.resign()
        promoted = await within(waiter, 5, "waiter elected")
        seen = await within(anext(changes), 5, "hand-off")
        assert seen is not None and seen.key == promoted.key
        await promoted.resign()


async def test_two_changes_in_one_batch_are_both_reported(client: geeh.Client, name: str) -> None:
    """A Txn that deletes the leader and creates a key yields both states, lowest first."""
    election = client.election(name)
    leader = await election.campaign(b"old", ttl=5)
    async with election.observe() as changes:
        assert (await within(anext(changes), 5, "initial")).key == leader.key  # type: ignore[union-attr]
        # One revision: delete the leader and add an outsider key under the prefix.
        other = f"{name}/ffff".encode()
        txn = rpc_pb2.TxnRequest(
            success=[
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=leader.key)),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=other, value=b"new")),
            ]
        )
        await client.core.transport.call(TXN, txn)
        seen = await within(anext(changes), 5, "new leader")
        assert seen is not None and seen.key == other
        await client.core.transport.call(
            TXN,
            rpc_pb2.TxnRequest(
                success=[
                    rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=other))
                ]
            ),
        )
        assert await within(anext(changes), 5, "no leader") is None


async def test_observer_survives_compaction_and_reconnection(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    """While its connection is down, leaders change and history is compacted: the observer
    re-reads, reports the current leader once, and misses nothing after."""
    election = client.election(name)
    first = await election.campaign(b"first", ttl=5)
    port = int(etcd.endpoints[0].rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        async with (
            geeh.Client(proxy.endpoint, discover=False) as observer_client,
            observer_client.election(name).observe() as changes,
        ):
            seen = await within(anext(changes), 5, "initial")
            assert seen is not None and seen.key == first.key
            proxy.refuse()
            await first.resign()
            second = await election.campaign(b"second", ttl=5)
            await client.compact()
            proxy.pass_through()
            seen = await within(anext(changes), 15, "leader after compaction")
            assert seen is not None and (seen.key, seen.value) == (second.key, b"second")
            await second.proclaim(b"later")
            seen = await within(anext(changes), 5, "change after resync")
            assert seen is not None and seen.value == b"later"
            await second.resign()
            assert await within(anext(changes), 5, "no leader") is None


async def test_observer_survives_etcd_restart(etcd: LocalEtcdCluster, name: str) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        election = client.election(name)
        async with election.observe() as changes:
            assert await within(anext(changes), 5, "initial") is None
            await asyncio.to_thread(etcd.kill, 0)
            await asyncio.to_thread(etcd.restart, 0)
            leadership = await within(election.campaign(b"after", ttl=5), 15, "campaign")
            seen = await within(anext(changes), 15, "leader after restart")
            assert seen is not None and seen.key == leadership.key
            await leadership.resign()
            assert await within(anext(changes), 5, "no leader") is None


async def test_observation_ends_when_the_client_closes(etcd: LocalEtcdCluster, name: str) -> None:
    client = geeh.Client(etcd.endpoints)
    await client.connect()
    changes = client.election(name).observe()
    assert await within(anext(changes), 5, "initial") is None
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await within(pending, 5, "observation to end")

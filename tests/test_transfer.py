"""Hand-over to a chosen candidate against a real etcd (issue 19; docs/concepts/transfer.md).

The witness is etcd's own history: a watch on the election's prefix from before the first
join sees every key created and deleted, in revision order; replaying it gives the leader
(lowest create revision present) at every revision, so "at most one leader, and who" is read
from etcd, not from the candidates' say-so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.kv import joined
from support.lines import LineProcess
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import RANGE
from geeh.testing import LocalEtcdCluster
from geeh.transfer import intent_key


class Leaders:
    """Every leader the election had, from etcd's history of its prefix."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []  # leader keys, one entry per change
        self.live: dict[bytes, int] = {}

    def apply(self, batch: object) -> None:
        for event in batch.events:  # type: ignore[attr-defined]
            if event.type == event.DELETE:
                self.live.pop(event.kv.key, None)
            else:
                self.live[event.kv.key] = event.kv.create_revision
            first = min(self.live, key=self.live.__getitem__) if self.live else None
            if first is not None and (not self.seen or self.seen[-1] != first):
                self.seen.append(first)


@pytest.fixture
async def leaders(client: geeh.Client, name: str) -> AsyncIterator[Leaders]:
    record = Leaders()
    prefix = election_prefix(name)
    response = await client.core.transport.call(RANGE, rpc_pb2.RangeRequest(key=b"\x00"))
    start = response.header.revision + 1
    with client.core.watches.watch(
        prefix, range_end=prefix_end(prefix), start_revision=start
    ) as watch:

        async def follow() -> None:
            async for batch in watch:
                record.apply(batch)

        task = asyncio.ensure_future(follow())
        yield record
        task.cancel()
        await asyncio.wait({task})


async def test_transfer_to_the_third_in_line(
    client: geeh.Client, name: str, leaders: Leaders
) -> None:
    """L, A, B, T: L hands over to T. A and B step aside (re-queue); T is the next and only
    leader after L, and A and B wait on behind it."""
    election = client.election(name)
    old = await election.campaign(b"L", ttl=5)
    a = asyncio.ensure_future(election.campaign(b"A", ttl=5))
    await joined(client, name, 2)
    b = asyncio.ensure_future(election.campaign(b"B", ttl=5))
    await joined(client, name, 3)
    t = asyncio.ensure_future(election.campaign(b"T", ttl=5))
    await joined(client, name, 4)

    target = await old.transfer(to=b"T")
    assert target.value == b"T"
    new = await within(t, 5, "the target to lead")
    assert not old.is_leader and new.is_leader
    assert old.lost.reason is None  # a hand-over, not a loss
    assert not a.done() and not b.done()
    line = [c.value for c in await election.candidates(ttl=False)]
    assert line[:2] == [b"T", b"A"] or line[:2] == [b"T", b"B"]
    assert sorted(line) == [b"A", b"B", b"T"]
    await eventually(lambda: len(leaders.seen) == 2, what="the hand-over in etcd's history")
    assert leaders.seen == [old.key, new.key]  # nobody led in between
    assert await client.get(intent_key(election.name)) is None
    await new.resign()
    for task in (a, b):
        task.cancel()
    await asyncio.wait({a, b})


async def test_transfer_by_key_keeps_candidates_behind_in_place(
    client: geeh.Client, name: str
) -> None:
    """The target named by its key; a candidate behind the target keeps its place."""
    election = client.election(name)
    old = await election.campaign(b"L", ttl=5)
    t = asyncio.ensure_future(election.campaign(b"T", ttl=5))
    await joined(client, name, 2)
    c = asyncio.ensure_future(election.campaign(b"C", ttl=5))
    await joined(client, name, 3)
    before = {x.value: x.token for x in await election.candidates(ttl=False)}
    queue = await election.candidates(ttl=False)
    target_key = next(x.key for x in queue if x.value == b"T")
    await old.transfer(to=target_key)
    new = await within(t, 5, "the target to lead")
    after = {x.value: x.token for x in await election.candidates(ttl=False)}
    assert after == {b"T": before[b"T"], b"C": before[b"C"]}
    await new.resign()
    await (await within(c, 5, "C to lead")).resign()


async def test_transfer_to_nobody_fails_and_we_lead_on(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    old = await election.campaign(b"L", ttl=5)
    with pytest.raises(geeh.TransferFailed, match="no waiting candidate"):
        await old.transfer(to=b"nobody")
    with pytest.raises(geeh.InvalidArgument, match="ourselves"):
        await old.transfer(to=old.key)
    with pytest.raises(geeh.InvalidArgument, match="timeout"):
        await old.transfer(to=b"x", timeout=0)
    assert old.is_leader
    await old.resign()


async def test_etcdctl_ahead_of_the_target_fails_cleanly(
    etcd: LocalEtcdCluster,
    client: geeh.Client,
    name: str,
    etcdctl_path: str,
    leaders: Leaders,
) -> None:
    """L, etcdctl elect, T: Go's candidate does not step aside, so the transfer fails, names
    it, removes its intent, and L leads on; T still waits."""
    election = client.election(name)
    old = await election.campaign(b"L", ttl=5)
    argv = [etcdctl_path, f"--endpoints={','.join(etcd.endpoints)}", "elect", name, "go"]
    with LineProcess(argv) as go:
        await joined(client, name, 2)
        t = asyncio.ensure_future(election.campaign(b"T", ttl=5))
        await joined(client, name, 3)
        go_key = (await election.candidates(ttl=False))[1].key
        with pytest.raises(geeh.TransferFailed, match=go_key.decode()):
            await old.transfer(to=b"T", timeout=1)
        assert old.is_leader
        leader = await election.leader()
        assert leader is not None and leader.key == old.key
        assert await client.get(intent_key(election.name)) is None
        assert not t.done()
        # The target leaving mid-transfer fails it at once, not at the timeout.
        attempt = asyncio.ensure_future(old.transfer(to=b"T", timeout=30))
        await eventually(lambda: client.get(intent_key(election.name)), what="the transfer intent")
        t.cancel()
        await asyncio.wait({t})
        with pytest.raises(geeh.TransferFailed, match="left the election"):
            await within(attempt, 10, "the transfer to fail")
        assert old.is_leader
        await old.resign()
        assert await asyncio.to_thread(go.line, 10, "etcdctl elected") == go_key.decode()
        assert await asyncio.to_thread(go.interrupt) == 0
    assert leaders.seen == [old.key, go_key]

"""Sharded leadership against a real etcd, and its balance rule (issue 19).

Ownership is witnessed from etcd's own history: a watch on the shards' prefix from before
the first member joins replays every key created and deleted; after each revision, a shard
that had an owner must still have one (no key in its line means no owner). Work is
witnessed in-process: a shard's work never runs in two members at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.balance import View, assign
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import RANGE
from geeh.testing import LocalEtcdCluster

N = 16
TTL = 2
MEMBER = Path(__file__).parent / "support" / "shard_member.py"

# -- the balance rule ---------------------------------------------------------------------------


@given(
    count=st.integers(1, 64),
    members=st.lists(st.integers(1, 20), min_size=1, max_size=8, unique=True),
    owners=st.dictionaries(st.integers(0, 63), st.integers(1, 25)),
)
def test_assign_is_balanced_and_moves_only_what_it_must(
    count: int, members: list[int], owners: dict[int, int]
) -> None:
    owners = {s: o for s, o in owners.items() if s < count}
    plan = assign(count, members, owners)
    held = Counter(plan)
    assert set(held) <= set(members)
    low, high = count // len(members), -(-count // len(members))
    assert all(low <= held[m] <= high for m in members)
    # A shard moves only if its owner is gone or over its quota.
    quota = {m: low + (1 if i < count % len(members) else 0) for i, m in enumerate(members)}
    kept = Counter(plan[s] for s, o in owners.items() if plan[s] == o)
    for m in members:
        owned = sum(1 for o in owners.values() if o == m)
        assert kept[m] == min(owned, quota[m])


def test_assign_without_members() -> None:
    assert assign(3, [], {0: 7}) == [None, None, None]


# -- against etcd ---------------------------------------------------------------------------


class History:
    """Replays etcd's history of the prefix; records any shard left without an owner."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.lines: dict[bytes, set[bytes]] = {}
        self.gaps: list[tuple[int, bytes]] = []  # (revision, shard) with no owner after it
        self.revision = 0
        self.checking = True

    def apply(self, events: list[Any]) -> None:
        by_revision: dict[int, list[Any]] = {}
        for e in events:
            by_revision.setdefault(e.kv.mod_revision, []).append(e)
        for revision in sorted(by_revision):
            self.revision = revision
            touched = set()
            for e in by_revision[revision]:
                head, _, tail = e.kv.key[len(self.prefix) :].partition(b"/")
                if not head.isdigit() or not tail:
                    continue
                line = self.lines.setdefault(head, set())
                if e.type == e.DELETE:
                    line.discard(e.kv.key)
                else:
                    line.add(e.kv.key)
                touched.add(head)
            for shard in touched:
                if self.checking and not self.lines[shard]:
                    self.gaps.append((revision, shard))


class Work:
    """The members' work: a fenced write per shard on start, and who runs what now."""

    def __init__(self, client: geeh.Client, name: str) -> None:
        self.client = client
        self.name = name
        self.running: dict[int, str] = {}
        self.overlaps: list[int] = []
        self.started = 0

    def member(self, value: str) -> object:
        async def work(shard: int, leadership: geeh.Leadership) -> None:
            if shard in self.running:
                self.overlaps.append(shard)
            self.running[shard] = value
            self.started += 1
            try:
                await leadership.put(f"{self.name}-data/{shard}", f"{value}:{leadership.token}")
                await asyncio.Event().wait()
            finally:
                if self.running.get(shard) == value:
                    del self.running[shard]

        return work


@pytest.fixture
async def history(client: geeh.Client, name: str) -> AsyncIterator[History]:
    prefix = election_prefix(name)
    record = History(prefix)
    response = await client.core.transport.call(RANGE, rpc_pb2.RangeRequest(key=b"\x00"))
    with client.core.watches.watch(
        prefix, range_end=prefix_end(prefix), start_revision=response.header.revision + 1
    ) as watch:

        async def follow() -> None:
            async for batch in watch:
                record.apply(list(batch.events))

        task = asyncio.ensure_future(follow())
        yield record
        task.cancel()
        await asyncio.wait({task})


async def settled(shards: geeh.Shards, members: int) -> View:
    async def check() -> object:
        view = await shards.view()
        return view if len(view.members) == members and view.balanced() else None

    return await eventually(check, timeout=20, what=f"{members} members balanced")


async def caught_up(client: geeh.Client, history: History) -> None:
    """Until the history has seen a write made now (under the prefix, of no shard)."""
    marker = history.prefix + b"marker/x"
    revision = await client.put(marker, b"")
    await client.delete(marker)
    await eventually(lambda: history.revision >= revision, what="the history to catch up")


async def test_two_three_two_members_balanced_without_a_gap(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str, history: History
) -> None:
    """2 members, then 3 (a join takes its share), then 2 (a graceful leave hands over): each
    time balanced, no shard ever without an owner once owned, no work run twice at once, and
    shards that did not move kept running."""
    witness = Work(client, name)
    shards = client.shards(name, N)
    clients = [geeh.Client(etcd.endpoints) for _ in range(3)]
    runs: list[asyncio.Task[None]] = []
    try:
        for c in clients:
            await c.connect()
        for i in range(2):
            member = clients[i].shards(name, N)
            runs.append(
                asyncio.ensure_future(member.run(witness.member(f"m{i}"), f"m{i}", ttl=TTL))
            )
        view = await settled(shards, 2)
        await eventually(lambda: len(witness.running) == N, what="work on every shard")
        before = {s: o.lease for s, o in view.owners.items()}
        starts = witness.started

        third = clients[2].shards(name, N)
        runs.append(asyncio.ensure_future(third.run(witness.member("m2"), "m2", ttl=TTL)))
        view = await settled(shards, 3)
        moved = sum(1 for s, o in view.owners.items() if before[s] != o.lease)
        assert moved == N // 3  # the newcomer's share, and no more
        await eventually(
            lambda: Counter(witness.running.values())["m2"] == moved, what="the newcomer's work"
        )
        assert witness.started - starts == moved  # shards that stayed were not restarted
        await eventually(lambda: len(witness.running) == N, what="work on every shard")

        runs[0].cancel()
        await within(asyncio.wait({runs[0]}), 15, "the first member to leave")
        view = await settled(shards, 2)
        await caught_up(client, history)
        assert history.gaps == []
        assert witness.overlaps == []
        # Each shard's data was written by its current owner, fenced with its token.
        for shard, owner in view.owners.items():
            data = await client.get(f"{name}-data/{shard}")
            assert data is not None and data.value.decode().endswith(f":{owner.token}")
    finally:
        for run in runs:
            run.cancel()
        await asyncio.wait(runs)
        for c in clients:
            await c.close()


async def test_crash_shards_are_reowned_after_the_lease(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    """A member killed with SIGKILL: once its lease expires its shards are led again, all
    by the member left."""
    shards = client.shards(name, N)
    witness = Work(client, name)
    run = asyncio.ensure_future(shards.run(witness.member("here"), "here", ttl=TTL))
    env = dict(os.environ)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(MEMBER),
        etcd.endpoints[0],
        name,
        str(N),
        "doomed",
        str(TTL),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"joined\n"
        await settled(shards, 2)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        view = await settled(shards, 1)
        assert set(view.values.values()) == {b"here"}
        await eventually(lambda: len(witness.running) == N, what="work on every shard")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        run.cancel()
        await asyncio.wait({run})


async def test_bad_input(client: geeh.Client, name: str) -> None:
    with pytest.raises(geeh.InvalidArgument, match="count"):
        client.shards(name, 0)
    with pytest.raises(geeh.InvalidArgument, match="work"):
        await client.shards(name, 2).run(None, "v")  # type: ignore[arg-type]


def test_the_blocking_form(etcd: LocalEtcdCluster, name: str) -> None:
    """Two blocking members share the shards; work runs on threads; close hands over."""
    queue = geeh.ActiveCompletionQueue()
    try:
        running: dict[int, str] = {}
        lock = threading.Lock()

        def member(value: str) -> Any:
            def work(shard: int, leadership: geeh.Leadership, stop: threading.Event) -> None:
                with lock:
                    running[shard] = value
                stop.wait()
                with lock:
                    if running.get(shard) == value:
                        del running[shard]

            return work

        members = []
        for value in ("a", "b"):
            client = queue.client(etcd.endpoints)
            shards = geeh.ShardedElection(queue, client, name, N, value, ttl=TTL)
            shards.run(member(value))
            members.append(shards)
        deadline = time.monotonic() + 20
        while Counter(running.values()) != {"a": N // 2, "b": N // 2}:
            assert time.monotonic() < deadline, f"not balanced: {running}"
            time.sleep(0.05)
        members[0].close(timeout=15)
        while Counter(running.values()) != {"b": N}:
            assert time.monotonic() < deadline + 10, f"not handed over: {running}"
            time.sleep(0.05)
        members[1].close(timeout=15)
        members[1].close()  # harmless twice
        assert running == {}
    finally:
        queue.close()

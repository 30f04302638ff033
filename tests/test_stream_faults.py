"""The watch stream under faults a real etcd produces only by chance: a member behind, a bug
in the code that reads the stream, a close that is itself cancelled (support.fake_etcd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.fake_etcd import FakeEtcd, fake_client, installed
from support.wait import eventually, within

import geeh
from geeh._proto import kv_pb2
from geeh.net.retry import RANGE


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEtcd]:
    async with installed(monkeypatch) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeEtcd) -> AsyncIterator[geeh.Client]:
    client = fake_client()
    try:
        yield client
    finally:
        await client.close()


async def test_a_reopen_makes_no_read_and_resumes_one_revision_early(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    """A re-open sends no compaction read (it could land on another member than the stream,
    or on a member behind, whose "future revision" is not compaction): each watch is
    re-created from its next revision - 1, etcd itself refuses a compacted one, and the
    event at next revision - 1 (seen already) is not delivered again."""
    for _ in range(5):
        fake.put(b"other", b"x")
    fake.put(b"k", b"seen")
    watch = client.core.watches.watch(b"k", start_revision=fake.revision + 1)
    await eventually(lambda: fake.watch_on(b"k"), what="the watch to be created")
    before = len(fake.requests)
    fake.break_watch_stream()
    await eventually(
        lambda: len(fake.watch_streams) == 2 and fake.watch_on(b"k"), what="the watch re-created"
    )
    assert fake.creates[-1].start_revision == fake.revision  # next revision - 1
    assert not [p for p, _ in fake.requests[before:] if p == RANGE.path]
    fake.notify(fake.delete(b"k"))
    batch = await within(watch.next(), 5, "the watch's next batch")
    assert [(e.type, e.kv.key) for e in batch.events] == [(kv_pb2.Event.DELETE, b"k")]


async def test_a_bug_reading_the_stream_ends_its_watches_and_blames_no_member(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    hub = client.core.watches
    watch = hub.watch(b"k", start_revision=fake.revision + 1)
    await eventually(lambda: fake.watch_on(b"k"), what="the watch to be created")
    generation = client.core.transport.generation

    def bug(response: Any) -> None:
        raise AttributeError("a bug")

    hub.received = bug  # type: ignore[method-assign]
    fake.put(b"k", b"v")
    fake.push(fake.watch_on(b"k") or 0, fake.delete(b"k"))
    with pytest.raises(geeh.ClosedError, match=r"internal error.*a bug"):
        await within(watch.next(), 5, "the watch to end")
    assert client.core.transport.generation == generation, "a bug was blamed on the member"
    assert len(fake.watch_streams) == 1, "the stream was re-opened after a bug"
    with pytest.raises(geeh.ClosedError, match="a bug"):
        hub.watch(b"k", start_revision=1)


async def test_a_leader_whose_watch_stream_broke_down_loses(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    """Every background task has an owner that sees its failure: the own-key watcher's
    watch ends with the stream's bug, and the leadership ends instead of leading blind."""
    leadership = await within(client.election("e").campaign(b"v", ttl=60), 5, "a win")
    hub = client.core.watches

    def bug(response: Any) -> None:
        raise AttributeError("a bug")

    hub.received = bug  # type: ignore[method-assign]
    fake.break_watch_stream()  # re-opened: the created response reaches the bug
    reason = await within(leadership.lost.wait(), 5, "the loss to be reported")
    assert isinstance(reason, geeh.CandidateRemoved)
    assert "a bug" in str(reason)
    assert not leadership.is_leader


async def test_a_cancelled_close_is_cancelled(fake: FakeEtcd, client: geeh.Client) -> None:
    """close() must not swallow its own cancellation while it waits for the stream."""
    hub = client.core.watches
    hub.watch(b"k", start_revision=1)
    await eventually(lambda: fake.watch_on(b"k"), what="the stream to be open")
    closing = asyncio.ensure_future(hub.close())
    await asyncio.sleep(0)  # one turn: close() runs up to its wait for the stream's task
    assert not closing.done()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await within(hub.close(), 5, "a second close to finish the job")
    assert hub._task is not None and hub._task.done()

"""A join applied late, after the term it won has ended, over the scripted member.

Shared session: the first join attempt gets no answer (its outcome unknown), the resent one
wins. After the leadership ends, etcd applies the first attempt: it creates the key again on
the live lease, where it would lead with no one behind it. The scripted member
(support.fake_etcd) applies it at the exact moment the test chooses and delivers its event;
tests/test_retries.py does the same against a real etcd.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from support.fake_etcd import FakeEtcd, fake_client, installed
from support.wait import eventually, within

import geeh
from geeh._proto import kv_pb2, rpc_pb2
from geeh.net.retry import TXN

NAME = "e"
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


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


def joins(request: Any) -> bool:
    return any(op.HasField("request_put") for op in request.success)


def guard_watch(fake: FakeEtcd, key: bytes) -> int | None:
    """The live watch that looks for our key's re-creation (PUTs only), if there is one."""
    found = [i for i, c in fake.live.items() if c.key == key and list(c.filters) == [NODELETE]]
    return found[-1] if found else None


@pytest.mark.parametrize("end", ["resign", "loss"])
async def test_a_join_applied_after_the_term_is_deleted_again(
    fake: FakeEtcd, client: geeh.Client, end: str
) -> None:
    session = await client.session(ttl=30)
    lost = fake.fail(TXN.path, grpc.StatusCode.DEADLINE_EXCEEDED, "answer lost", match=joins)
    leadership = await within(
        client.election(NAME).campaign(b"v", session=session), 5, "the resent join to win"
    )
    assert lost.hits == 1
    late = next(r for p, r in fake.requests if p == TXN.path and joins(r))  # the first
    key = leadership.key
    if end == "resign":
        await leadership.resign()
    else:
        watch = fake.watch_on(key)
        assert watch is not None
        fake.push(watch, fake.delete(key))  # someone deletes our key
        await within(leadership.lost.wait(), 5, "the loss")
    await eventually(lambda: guard_watch(fake, key) is not None, what="the late-join guard")
    assert key not in fake.state()

    applied = fake._Txn(late)  # etcd applies the first attempt only now
    assert applied.succeeded, "the late join created the key again"
    recreated = fake.state()[key]
    assert recreated.lease == session.lease
    put = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=recreated)
    watch = guard_watch(fake, key)
    assert watch is not None
    fake.push(watch, [put])
    await eventually(lambda: key not in fake.state(), what="the recreated key to be deleted")
    assert session.alive
    await session.close()


def deletes(request: Any) -> bool:
    return any(op.HasField("request_delete_range") for op in request.success)


async def test_a_newer_campaign_that_took_the_key_over_keeps_it(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    """The ended term's clean-up is held up; meanwhile a new campaign of the same session
    joins with the same key (its own first attempt unanswered too) and wins. When the old
    clean-up ends, the guard is not started on the new campaign's key."""
    session = await client.session(ttl=30)
    fake.fail(TXN.path, grpc.StatusCode.DEADLINE_EXCEEDED, "answer lost", match=joins)
    election = client.election(NAME)
    first = await within(election.campaign(b"v", session=session), 5, "the first term")
    held = fake.fail(TXN.path, grpc.StatusCode.UNAVAILABLE, "down", times=None, match=deletes)
    watch = fake.watch_on(first.key)
    assert watch is not None
    fake.push(watch, fake.delete(first.key))  # a loss: the clean-up's delete now fails
    await within(first.lost.wait(), 5, "the loss")
    await eventually(lambda: held.hits > 0, what="the clean-up to try its delete")

    fake.fail(TXN.path, grpc.StatusCode.DEADLINE_EXCEEDED, "answer lost", match=joins)
    second = await within(election.campaign(b"v", session=session), 5, "the second term")
    assert second.key == first.key and second.token > first.token
    fake.faults.remove(held)  # the old clean-up's delete goes through (and finds nothing)

    def quiet() -> bool:
        return len(client.core.tasks) == 0

    await eventually(quiet, what="the old term's clean-up to end, starting nothing")
    assert fake.state()[second.key].create_revision == second.token
    assert second.is_leader
    await second.resign()
    await session.close()

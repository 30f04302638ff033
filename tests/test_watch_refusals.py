"""etcd's answers about one watch end that watch only; the stream goes on for the others
(support.fake_etcd scripts the refusals; test_rbac.py has the same against a real etcd).

Also the suspicions of the same review, each confirmed (and fixed) or cleared here: which
member a keepalive answer vouches for, whether a failed re-authentication blames the member,
whether an observer tells a failure from a close, and whether the hub's compaction check can
run on another member than the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from support.fake_etcd import FakeEtcd, installed
from support.wait import eventually, within

import geeh
from geeh.errors import Compacted
from geeh.net.retry import AUTHENTICATE, RANGE, TXN

USER = "svc"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEtcd]:
    async with installed(monkeypatch) as fake:
        yield fake


def client_of(*endpoints: str, auth: bool = True, timeout: float = 0.5) -> geeh.Client:
    credentials: dict[str, Any] = {"username": USER, "password": "pw"} if auth else {}
    return geeh.Client(
        list(endpoints) or ["fake:2379"],
        discover=False,
        request_timeout=timeout,
        attempt_timeout=0.2,
        **credentials,
    )


@pytest.mark.parametrize("anonymous", [False, True], ids=["etcd3.5", "etcd3.4"])
async def test_a_refused_watch_ends_and_the_others_go_on(fake: FakeEtcd, anonymous: bool) -> None:
    """Read on b/ is revoked at run time, then the stream breaks: the watch on b/ is refused
    on every re-open. It ends with PermissionDenied naming key and user after one
    re-authentication, and the watch on a/ keeps delivering on the same stream. etcd 3.4
    names no watch in the refusal (ID -1): it answers the oldest create still unanswered."""
    fake.anonymous_refusals = anonymous
    async with client_of() as client:
        hub = client.core.watches
        allowed = hub.watch(b"a/k", start_revision=fake.revision + 1)
        refused = hub.watch(b"b/k", start_revision=fake.revision + 1)
        await eventually(lambda: fake.watch_on(b"a/k") and fake.watch_on(b"b/k"), what="watches")
        assert fake.tokens == 1
        fake.denied.add(b"b/")
        # As etcd does once read is revoked: reads of b/ are refused too.
        fake.fail(
            RANGE.path,
            grpc.StatusCode.PERMISSION_DENIED,
            "etcdserver: permission denied",
            times=None,
            match=lambda r: r.key.startswith(b"b/"),
        )
        fake.break_watch_stream()
        with pytest.raises(geeh.PermissionDenied, match=r"b/k.*'svc'.*permission denied"):
            await within(refused.next(), 5, "the refused watch to end")
        assert fake.tokens == 2, "one re-authentication for the refusal, no more"
        streams = len(fake.watch_streams)
        await eventually(lambda: fake.watch_on(b"a/k"), what="the allowed watch re-created")
        fake.put(b"a/k", b"v")
        fake.notify(fake.delete(b"a/k"))
        batch = await within(allowed.next(), 5, "the allowed watch's events")
        assert [e.kv.key for e in batch.events] == [b"a/k"]
        assert len(fake.watch_streams) == streams, "the stream was re-opened after the refusal"
        assert fake.tokens == 2


async def test_an_expired_token_is_renewed_and_the_watch_goes_on(fake: FakeEtcd) -> None:
    """The same refusal for an expired token: one re-authentication cures it."""
    async with client_of() as client:
        hub = client.core.watches
        watch = hub.watch(b"a/k", start_revision=fake.revision + 1)
        await eventually(lambda: fake.watch_on(b"a/k"), what="the watch")
        fake.expired.add("token-1")
        fake.break_watch_stream()
        await eventually(lambda: fake.tokens == 2 and fake.watch_on(b"a/k"), what="re-created")
        fake.put(b"a/k", b"v")
        fake.notify(fake.delete(b"a/k"))
        batch = await within(watch.next(), 5, "the watch's events")
        assert [e.kv.key for e in batch.events] == [b"a/k"]
        assert fake.tokens == 2


async def test_a_watch_cancelled_for_another_reason_ends_alone(fake: FakeEtcd) -> None:
    """A cancel naming one watch for a reason other than the member's ("no leader") ends
    that watch with the reason; the stream stays (no new stream, no pin moved)."""
    async with client_of(auth=False) as client:
        hub = client.core.watches
        other = hub.watch(b"a/k", start_revision=fake.revision + 1)
        watch = hub.watch(b"b/k", start_revision=fake.revision + 1)
        await eventually(lambda: fake.watch_on(b"b/k"), what="the watch")
        generation = client.core.transport.generation
        fake.respond(
            geeh._proto.rpc_pb2.WatchResponse(
                watch_id=fake.watch_on(b"b/k") or 0, canceled=True, cancel_reason="mvcc: odd"
            )
        )
        with pytest.raises(geeh.EtcdError, match=r"b/k.*mvcc: odd"):
            await within(watch.next(), 5, "the watch to end")
        assert client.core.transport.generation == generation
        assert len(fake.watch_streams) == 1
        fake.put(b"a/k", b"v")
        fake.notify(fake.delete(b"a/k"))
        assert (await within(other.next(), 5, "the other watch")).events


async def test_a_failed_reauthentication_keeps_the_pin(fake: FakeEtcd) -> None:
    """Suspicion confirmed and fixed: an Authenticate refused by etcd (not a member fault)
    made the stream report its member failed and move the pin."""
    async with client_of("a:2379", "b:2379") as client:
        transport = client.core.transport
        hub = client.core.watches
        hub.watch(b"a/j", start_revision=fake.revision + 1)
        await eventually(lambda: fake.watch_on(b"a/j"), what="the stream open")
        fake.fail(AUTHENTICATE.path, grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: busy")
        fake.expired.add("token-1")
        watch = hub.watch(b"a/k", start_revision=fake.revision + 1)  # refused: token expired
        await eventually(lambda: fake.tokens == 2 and fake.watch_on(b"a/k"), what="re-created")
        assert transport.endpoint == "a:2379", "a refused Authenticate moved the pin"
        fake.put(b"a/k", b"v")
        fake.notify(fake.delete(b"a/k"))
        assert (await within(watch.next(), 5, "the watch's events")).events


async def test_a_keepalive_answer_vouches_for_its_own_member(
    fake: FakeEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suspicion confirmed and fixed: after the pin moved, and before the keepalive stream
    followed it, an answer from the old member marked the new one "covered", which delays
    the new member's frozen-member probe. The window is held open by a stream that does not
    notice the move."""
    async with client_of("a:2379", "b:2379", auth=False) as client:
        transport = client.core.transport
        lessor = client.core.lessor
        await within(lessor.keepalive(0x1000, 1.0), 5, "a keepalive on a")
        assert "a:2379" in transport.covered

        async def never(generation: int) -> None:
            await asyncio.Event().wait()

        monkeypatch.setattr(transport, "wait_moved", never)
        lessor_stream = len(fake.calls)
        transport.fail("a:2379", "test")  # the pin moves; the stream stays on a
        assert transport.endpoint == "b:2379"
        await within(lessor.keepalive(0x1000, 1.0), 5, "a keepalive answered by a")
        assert len(fake.calls) == lessor_stream, "the stream moved after all"
        assert "b:2379" not in transport.covered, "b marked covered by a's answer"


async def test_an_observer_tells_a_failure_from_a_close(fake: FakeEtcd) -> None:
    """Suspicion confirmed and fixed: when the watch stream stopped after an internal error,
    the observer ended its iteration as if closed. It raises the ClosedError naming the bug."""
    async with client_of(auth=False) as client:
        observation = client.election("e").observe()
        assert await within(anext(observation), 5, "no leader yet") is None
        await eventually(lambda: fake.live, what="the observer's watch")

        def bug(response: Any) -> None:
            raise AttributeError("a bug")

        client.core.watches.received = bug  # type: ignore[method-assign]
        fake.break_watch_stream()
        with pytest.raises(geeh.ClosedError, match="internal error"):
            await within(anext(observation), 5, "the observer to fail")
    # A close still ends the iteration quietly.
    async with client_of(auth=False) as client:
        observation = client.election("e").observe()
        assert await within(anext(observation), 5, "no leader yet") is None
        nxt = asyncio.ensure_future(anext(observation))
        await eventually(lambda: fake.live, what="the observer's watch")
        await client.close()
        with pytest.raises(StopAsyncIteration):
            await within(nxt, 5, "the end of the iteration")


async def test_the_compaction_check_is_the_stream_itself(fake: FakeEtcd) -> None:
    """Suspicion cleared by construction: no separate read checks compaction before a
    re-open (it could land on another member than the stream). etcd refuses the re-created
    watch on the stream's own member, and the watch ends with Compacted."""
    async with client_of(auth=False) as client:
        watch = client.core.watches.watch(b"k", start_revision=fake.revision + 1)
        await eventually(lambda: fake.watch_on(b"k"), what="the watch")
        fake.put(b"k", b"v")
        fake.delete(b"k")  # not delivered: the stream is cut first
        fake.compacted = fake.revision
        before = len(fake.requests)
        fake.break_watch_stream()
        with pytest.raises(Compacted):
            await within(watch.next(), 5, "the watch to end")
        assert not [p for p, _ in fake.requests[before:] if p == RANGE.path]


async def test_a_write_racing_a_role_change_is_sent_again(fake: FakeEtcd) -> None:
    """Found by the chaos run's rbac lane: a write that etcd refuses, unapplied, because roles
    changed between its arrival and its apply ("auth: revision in header is old") is sent
    again after one re-authentication, instead of failing the campaign."""
    async with client_of(timeout=5.0) as client:  # renewals are a second apart
        fake.fail(TXN.path, grpc.StatusCode.UNKNOWN, "auth: revision in header is old")
        leadership = await within(client.election("e").campaign(b"v", ttl=60), 5, "a win")
        assert leadership.is_leader
        assert fake.tokens == 2
        await leadership.resign()

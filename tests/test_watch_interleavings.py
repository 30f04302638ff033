"""Every interleaving the scripted fake can produce of a watch's create, etcd's answer to it,
the watched deletion, a compaction, another watch's cancel and a cut stream; and the same
with read permission revoked at run time instead of a compaction.

The invariant, for the class of bugs where a watch misses history: no watched deletion is
ever silently missed. Whatever the order, the watch either delivers the deletion (once) or
ends with Compacted (its consumer then re-reads) or a permission error; it never stays open
having skipped it, and a watch the user may still read is never held up by one refused.

Deterministic and quick: the fake answers in memory, the stream's backoff is zero, and each
step is followed by a fixed number of event-loop turns (no wall-clock waits).
"""

from __future__ import annotations

import asyncio
import itertools

import grpc
import pytest
from support.fake_etcd import FakeEtcd, fake_client

import geeh
import geeh.net.auth
import geeh.net.stream
from geeh._proto import kv_pb2
from geeh.errors import Compacted, PermissionDenied
from geeh.net.retry import Backoff
from geeh.watch import Batch, Inbox, Mailbox

STEPS = ("create", "created", "delete", "compact", "cancel", "cut")
KEY, SIBLING = b"k", b"s"


async def settle(turns: int = 60) -> None:
    """Let every task run until the in-memory exchange is quiet (no I/O, no timers)."""
    for _ in range(turns):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geeh.net.stream, "Backoff", lambda: Backoff(base=0.0))


OK = ("delivered", "compacted")


async def run(schedule: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> str:
    """Play one schedule; return its outcome (one of OK), or what went wrong."""
    fake = FakeEtcd()
    monkeypatch.setattr(grpc.aio, "insecure_channel", fake.channel)
    fake.hold_creates = True
    client = fake_client()
    hub = client.core.watches
    got: list[Batch | BaseException] = []
    inbox: Inbox = Mailbox()

    async def consume() -> None:
        while True:
            _, item = await inbox.get()
            got.append(item)
            if isinstance(item, BaseException):
                return

    consumer = asyncio.ensure_future(consume())
    try:
        fake.put(KEY, b"v")
        start = fake.revision + 1  # as an observer does: read at R, watch from R + 1
        sibling = hub.watch(SIBLING, start_revision=start)
        await settle()  # the stream is open
        deleted_at = 0
        for step in schedule:
            if step == "create":
                hub.watch(KEY, start_revision=start, queue=inbox)
            elif step == "created":
                fake.hold_creates = False
                fake.answer_held()
            elif step == "delete":
                events = fake.delete(KEY)
                deleted_at = fake.revision
                fake.notify(events)
            elif step == "compact":
                fake.compacted = fake.revision
            elif step == "cancel":
                sibling.cancel()
            elif step == "cut":
                fake.break_watch_stream()
            await settle()
        fake.hold_creates = False
        fake.answer_held()
        await settle()
        deletions = [
            e
            for item in got
            if isinstance(item, Batch)
            for e in item.events
            if e.type == kv_pb2.Event.DELETE and e.kv.mod_revision == deleted_at
        ]
        ended = [item for item in got if isinstance(item, BaseException)]
        if len(deletions) > 1:
            return f"the deletion was delivered {len(deletions)} times"
        if ended and not isinstance(ended[0], Compacted):
            return f"ended with {ended[0]!r}"
        if not deletions and not ended:
            live = fake.watch_on(KEY) is not None
            return "deletion silently missed" if live else "the watch stalled (not live on etcd)"
        return "delivered" if deletions else "compacted"
    finally:
        consumer.cancel()
        await client.close()
        await fake.close()


async def test_no_interleaving_misses_a_watched_deletion(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = {}
    for schedule in itertools.permutations(STEPS):
        outcomes[" ".join(schedule)] = await run(schedule, monkeypatch)
    failures = {s: o for s, o in outcomes.items() if o not in OK}
    assert not failures, f"{len(failures)} of {len(outcomes)} schedules fail: " + "; ".join(
        f"[{s}] {f}" for s, f in list(failures.items())[:8]
    )
    # Not vacuous: some schedules deliver the deletion, others must end the watch.
    assert set(outcomes.values()) == set(OK)
    assert outcomes["delete compact create created cancel cut"] == "compacted"


RBAC_STEPS = ("create", "created", "delete", "revoke", "cancel", "cut")
ALLOWED, REFUSED = b"a/k", b"b/k"


def deleted(got: list[Batch | BaseException], key: bytes) -> int:
    return sum(
        e.type == kv_pb2.Event.DELETE and e.kv.key == key
        for item in got
        if isinstance(item, Batch)
        for e in item.events
    )


async def run_rbac(schedule: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> str:
    """Play one schedule with read on b/ revoked at "revoke"; its outcome, or what failed."""
    fake = FakeEtcd()
    monkeypatch.setattr(grpc.aio, "insecure_channel", fake.channel)
    client = geeh.Client(
        "fake:2379", username="u", password="p", discover=False,
        request_timeout=0.5, attempt_timeout=0.2,
    )  # fmt: skip
    await client.connect()
    fake.hold_creates = True
    hub = client.core.watches
    got: dict[bytes, list[Batch | BaseException]] = {ALLOWED: [], REFUSED: []}
    inbox: Inbox = Mailbox()

    async def consume() -> None:
        while True:
            w, item = await inbox.get()
            got[w.key].append(item)

    consumer = asyncio.ensure_future(consume())
    try:
        fake.put(ALLOWED, b"v")
        fake.put(REFUSED, b"v")
        start = fake.revision + 1
        hub.watch(ALLOWED, start_revision=start, queue=inbox)
        sibling = hub.watch(SIBLING, start_revision=start)
        await settle()
        for step in schedule:
            if step == "create":
                hub.watch(REFUSED, start_revision=start, queue=inbox)
            elif step == "created":
                fake.hold_creates = False
                fake.answer_held()
            elif step == "delete":
                fake.notify(fake.delete(ALLOWED))
                fake.notify(fake.delete(REFUSED))
            elif step == "revoke":
                fake.denied.add(b"b/")
            elif step == "cancel":
                sibling.cancel()
            elif step == "cut":
                fake.break_watch_stream()
            await settle()
        fake.hold_creates = False
        fake.answer_held()
        await settle()
        allowed, refused = got[ALLOWED], got[REFUSED]
        if deleted(allowed, ALLOWED) != 1 or any(isinstance(i, BaseException) for i in allowed):
            return f"the permitted watch got {allowed!r}"
        if fake.tokens > 2:
            return f"{fake.tokens - 1} re-authentications"
        if deleted(refused, REFUSED) > 1:
            return "the deletion was delivered twice"
        ended = [i for i in refused if isinstance(i, BaseException)]
        if ended and not (isinstance(ended[0], PermissionDenied) and "b/k" in str(ended[0])):
            return f"ended with {ended[0]!r}"
        if not ended and not deleted(refused, REFUSED):
            return "deletion silently missed"
        return "refused" if ended else "delivered"
    finally:
        consumer.cancel()
        await client.close()
        await fake.close()


async def test_no_interleaving_with_read_revoked_misses_or_stalls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(geeh.net.auth, "MIN_INTERVAL", 0.0)
    outcomes = {}
    for schedule in itertools.permutations(RBAC_STEPS):
        outcomes[" ".join(schedule)] = await run_rbac(schedule, monkeypatch)
    ok = ("delivered", "refused")
    failures = {s: o for s, o in outcomes.items() if o not in ok}
    assert not failures, f"{len(failures)} of {len(outcomes)} schedules fail: " + "; ".join(
        f"[{s}] {f}" for s, f in list(failures.items())[:6]
    )
    assert set(outcomes.values()) == set(ok)

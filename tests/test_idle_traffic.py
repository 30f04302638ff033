"""Idle cost of many elections in one client: traffic that stays flat, memory that stays small.

A progress request covers the whole watch stream, and a shared session's keepalives prove the
member alive for every election at once: what an idle client sends must not grow with the
number of elections it observes or holds. Counted at both ends: the requests the client's
watch hub sends, and the messages etcd's own counters (``/metrics``) say it sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import tracemalloc
import urllib.request
from collections.abc import AsyncIterator, Callable

import pytest

import geeh
from geeh import watch
from geeh._proto import rpc_pb2 as rpc
from geeh.testing import EtcdFactory, LocalEtcdCluster

_WATCH_SENT = re.compile(
    r'^grpc_server_msg_sent_total\{grpc_method="Watch",grpc_service="etcdserverpb.Watch",'
    r'grpc_type="bidi_stream"\} (\S+)$',
    re.M,
)


def watch_messages_sent(etcd: LocalEtcdCluster) -> int:
    """Watch-stream messages etcd has sent so far (its own counter)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(etcd.client_urls[0] + "/metrics", timeout=5).read().decode()
    m = _WATCH_SENT.search(text)
    return int(float(m.group(1))) if m else 0


class Counted:
    """Counts what a stream owner sends, by kind, and wakes whoever waits for a count."""

    def __init__(self, owner: object, kind: Callable[[object], str], method: str = "send") -> None:
        self.counts: dict[str, int] = {}
        self._changed = asyncio.Event()
        original = getattr(owner, method)

        def counting(message: object) -> object:
            self.counts[kind(message)] = self.counts.get(kind(message), 0) + 1
            self._changed.set()
            return original(message)

        setattr(owner, method, counting)

    async def until(self, what: str, n: int) -> None:
        while self.counts.get(what, 0) < n:
            self._changed.clear()
            await self._changed.wait()


def _watch_kind(request: object) -> str:
    assert isinstance(request, rpc.WatchRequest)
    return str(request.WhichOneof("request_union"))


def _created(response: object) -> str:
    assert isinstance(response, rpc.WatchResponse)
    return "created" if response.created else "other"


@pytest.fixture
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Probe after 0.2 s of silence instead of 3 s: the same logic, more periods per second.
    monkeypatch.setattr(watch, "PROBE_IDLE", 0.2)
    monkeypatch.setattr(watch, "PROBE_TIMEOUT", 0.2)


@contextlib.asynccontextmanager
async def observing(client: geeh.Client, names: list[str]) -> AsyncIterator[None]:
    """Observe every election in ``names``; entered once each has reported its leader."""
    loop = asyncio.get_running_loop()
    first = [loop.create_future() for _ in names]

    async def one(name: str, reported: asyncio.Future[None]) -> None:
        async with client.election(name).observe() as changes:
            async for _ in changes:
                if not reported.done():
                    reported.set_result(None)

    tasks = [asyncio.ensure_future(one(n, f)) for n, f in zip(names, first, strict=True)]
    try:
        await asyncio.gather(*first)
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.usefixtures("quick_probes")
@pytest.mark.parametrize("elections", [1, 200])
async def test_an_idle_observer_probes_once_per_period_whatever_it_observes(
    etcd_factory: EtcdFactory, name: str, elections: int
) -> None:
    etcd = etcd_factory()
    async with geeh.Client(etcd.endpoints) as client:
        names = [f"{name}-{i}" for i in range(elections)]
        async with observing(client, names):
            hub = client.core.watches
            sent = Counted(hub, _watch_kind)
            await sent.until("progress_request", 1)
            before = watch_messages_sent(etcd)
            await sent.until("progress_request", 6)
            answered = watch_messages_sent(etcd) - before
            # Five probes on one stream, whatever the number of watches on it: etcd answers
            # each once (one more may be on its way), and nothing else was sent meanwhile.
            assert sent.counts == {"progress_request": 6}
            assert 5 <= answered <= 6


@pytest.mark.usefixtures("quick_probes")
async def test_elections_held_on_a_shared_session_send_no_progress_requests(
    etcd_factory: EtcdFactory, name: str
) -> None:
    etcd = etcd_factory()
    async with geeh.Client(etcd.endpoints) as client:
        session = await client.session(ttl=2)  # a keepalive every 0.67 s: the member is covered
        hub, lessor = client.core.watches, client.core.lessor
        created = Counted(hub, _created, "received")
        held = await asyncio.gather(
            *(client.election(f"{name}-{i}").campaign(b"v", session=session) for i in range(200))
        )
        await created.until("created", 200)  # etcd confirms the watches after the wins
        sent = Counted(hub, _watch_kind)
        keepalives = Counted(lessor, lambda request: "keepalive")
        before = watch_messages_sent(etcd)
        await keepalives.until("keepalive", 4)
        assert sent.counts == {}
        assert watch_messages_sent(etcd) == before
        assert all(leadership.is_leader for leadership in held)


async def test_a_held_election_costs_a_few_kib_of_python_heap(
    client: geeh.Client, name: str
) -> None:
    session = await client.session(ttl=10)
    warm = await client.election(f"{name}-warm").campaign(b"v", session=session)
    n = 300
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = await asyncio.gather(
            *(client.election(f"{name}-{i}").campaign(b"v", session=session) for i in range(n))
        )
        gc.collect()
        per_election = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    # Measured 4.9 KiB; an asyncio.Queue per watch and an asyncio.Event per loss signal
    # made it 8.8 KiB.
    assert per_election < 6.5 * 1024, f"{per_election / 1024:.1f} KiB per held election"
    for leadership in [*held, warm]:
        await leadership.resign()
    await session.close()


async def test_a_mailbox_serves_several_waiters_and_loses_nothing_to_a_cancelled_one() -> None:
    box: watch.Mailbox[int] = watch.Mailbox()
    cancelled = asyncio.ensure_future(box.get())
    first, second = asyncio.ensure_future(box.get()), asyncio.ensure_future(box.get())
    await asyncio.sleep(0)  # all three are waiting
    cancelled.cancel()
    box.put_nowait(1)
    box.put_nowait(2)
    assert sorted(await asyncio.gather(first, second)) == [1, 2]
    assert cancelled.cancelled()
    box.put_nowait(3)
    assert await box.get() == 3

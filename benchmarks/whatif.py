"""What-if: the hand-off with the fixes proposed in BENCHMARKS.md, patched in at run time.

The library is not changed: for the length of one hand-off, a variant wraps two methods in
this process only:

- ``serializable``: the campaign's wait read (the Range with ``max_create_revision``) is sent
  with ``serializable=True``, so etcd answers from the member's applied state instead of
  first confirming its read index with the leader and waiting for every commit before it;
- ``revoke``: ``Leadership.resign()`` of a campaign that owns its session sends one
  LeaseRevoke (which deletes the candidate key with the lease) instead of a guarded Delete
  followed by a LeaseRevoke: one commit instead of two;
- ``ahead``: ``Campaign._wait()`` reads the three newest keys up to its own (itself, its
  predecessor P1 and P1's predecessor P2) and watches P2 and P1: when P2 goes (P1 now leads)
  it reads again, off the critical path, and learns that P1 is the only older key; when P1
  then goes it leads with no read. The successor of a hand-off never reads; the third in line
  does, while the new leader already leads.

Variants run on elections of their own, one hand-off each in rotation (interleaved), with 1
and 10 candidates waiting, all candidates of a variant on one Client in this process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import geeh
from geeh import election as election_mod
from geeh import failover
from geeh import leadership as leadership_mod
from geeh._proto import rpc_pb2 as rpc
from geeh.errors import CandidateRemoved, ClosedError, ElectionError
from geeh.watch import NOPUT, Compacted

from .common import Config, Etcd, Series

VARIANTS = {
    "as is": set(),
    "A: resign = one LeaseRevoke": {"revoke"},
    "B: serializable wait read": {"serializable"},
    "C: read one hand-off ahead": {"ahead"},
    "A + B + C": {"revoke", "serializable", "ahead"},
}

# The variant of each election, by its key prefix: the patches act only on those elections.
_MODES: dict[bytes, set[str]] = {}


def _mode(prefix: bytes) -> set[str]:
    return _MODES.get(prefix, set())


async def _wait_ahead(
    self: Any, session: Any, key: bytes, token: int, gone: asyncio.Future[BaseException]
) -> None:
    """Campaign._wait as proposed (fix C): read limit 3, watch P2 and P1."""
    transport = self.election._client._transport
    hub = self.election._client._watches
    while True:
        if gone.done():
            raise gone.result()
        session.check()
        response = await transport.call(
            failover.RANGE,
            rpc.RangeRequest(
                key=self.election.prefix,
                range_end=self.election._end,
                max_create_revision=token,
                sort_order=rpc.RangeRequest.DESCEND,
                sort_target=rpc.RangeRequest.CREATE,
                limit=3,
                keys_only=True,
                serializable="serializable" in _mode(self.election.prefix),
            ),
            what="campaign",
        )
        kvs = response.kvs
        if not kvs or kvs[0].key != key or kvs[0].create_revision != token:
            if gone.done():
                raise gone.result()
            raise CandidateRemoved(f"candidate key {key!r} was deleted while waiting")
        if len(kvs) == 1:
            return
        older = [kv.key for kv in kvs[1:]]
        everything = [*older, key]
        with hub.watch(
            min(everything),
            range_end=max(everything) + b"\x00",
            start_revision=response.header.revision + 1,
            filters=[NOPUT],
        ) as w:
            deleted = await _first_deleted(w, set(older), key, gone)
        if deleted == {older[0]} and len(older) == 1 and not response.more:
            return  # P1 was the only older key and it is gone: we lead, no read


async def _first_deleted(
    w: Any, older: set[bytes], key: bytes, gone: asyncio.Future[BaseException]
) -> set[bytes]:
    """The watched older keys deleted in the first batch that deletes any (empty: compacted)."""

    async def deletions() -> set[bytes]:
        while True:
            batch = await w.next()
            deleted = {e.kv.key for e in batch.events if e.type == e.DELETE}
            if key in deleted:
                raise CandidateRemoved(f"candidate key {key!r} was deleted while waiting")
            if deleted & older:
                return deleted & older

    waiter = asyncio.ensure_future(deletions())
    try:
        waiting: set[asyncio.Future[Any]] = {waiter, gone}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if waiter.done() and not waiter.cancelled():
        try:
            return waiter.result()
        except Compacted:
            return set()
        except ClosedError:
            pass
    if gone.done():
        reason = gone.result()
        if isinstance(reason, ElectionError | ClosedError):
            raise reason
        raise ClosedError(str(reason))
    raise ClosedError("the client is closed")


def _patch() -> Any:
    transport_call = failover.Transport.call
    resign = leadership_mod.Leadership.resign
    wait = election_mod.Campaign._wait

    async def wait_maybe_ahead(self: Any, *args: Any) -> None:
        if "ahead" in _mode(self.election.prefix):
            return await _wait_ahead(self, *args)
        return await wait(self, *args)

    async def call(self: Any, method: Any, request: Any, **kwargs: Any) -> Any:
        if (
            method is failover.RANGE
            and isinstance(request, rpc.RangeRequest)
            and request.max_create_revision
            and "serializable" in _mode(request.key)
        ):
            request.serializable = True
        return await transport_call(self, method, request, **kwargs)

    async def resign_by_revoke(self: Any, **kwargs: Any) -> None:
        if "revoke" not in _mode(self.election.prefix) or not self._owns_session or self._resigned:
            return await resign(self, **kwargs)
        self.lost.set(None)
        await self.session.close()  # LeaseRevoke: etcd deletes our key with the lease
        self._resigned = True
        self.election._client._forget(self)
        return None

    failover.Transport.call = call  # type: ignore[method-assign]
    election_mod.Campaign._wait = wait_maybe_ahead  # type: ignore[method-assign,assignment]
    leadership_mod.Leadership.resign = resign_by_revoke  # type: ignore[method-assign]

    def undo() -> None:
        failover.Transport.call = transport_call  # type: ignore[method-assign]
        leadership_mod.Leadership.resign = resign  # type: ignore[method-assign]
        election_mod.Campaign._wait = wait  # type: ignore[method-assign]

    return undo


class Queue:
    """One election: a leader and N waiting candidates on one Client."""

    def __init__(
        self, client: geeh.Client, etcd: Etcd, name: str, waiting: int, mode: set[str]
    ) -> None:
        _MODES[client.election(name).prefix] = mode
        self.client = client
        self.etcd = etcd
        self.name = name
        self.waiting = waiting
        self.won: asyncio.Queue[tuple[float, geeh.Leadership]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.serial = 0
        self.leadership: geeh.Leadership | None = None
        self.extra_wins = 0

    def add(self) -> None:
        self.serial += 1
        value = f"w{self.serial}"

        async def candidate() -> None:
            leadership = await self.client.election(self.name).campaign(value, ttl=60)
            self.won.put_nowait((time.monotonic(), leadership))

        task = asyncio.ensure_future(candidate())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        await self.etcd.clear(self.name)
        self.add()
        _, self.leadership = await self.won.get()
        # Join in batches: 1000 campaigns at once can push a request past the 2 s attempt
        # timeout on a loaded machine, and the client then leaves a healthy member
        # (measured separately in switch.py).
        for start in range(0, self.waiting, 100):
            for _ in range(min(100, self.waiting - start)):
                self.add()
            await self.etcd.wait_count(self.name, min(self.waiting, start + 100) + 1, timeout=120)

    async def handoff(self, t0: float | None = None) -> float:
        """Resign and wait for the successor; the latency from ``t0`` (default: now)."""
        assert self.leadership is not None
        t0 = time.monotonic() if t0 is None else t0
        await self.leadership.resign()
        t1, self.leadership = await self.won.get()
        while not self.won.empty():  # a second winner would be a bug in a variant
            self.extra_wins += 1
            _, extra = self.won.get_nowait()
            await extra.resign()
        self.add()
        await self.etcd.wait_count(self.name, self.waiting + 1)
        return t1 - t0

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.leadership is not None:
            await self.leadership.resign()
        await self.etcd.clear(self.name)


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[int, dict[str, Series]]:
    rounds = cfg.n(30, 10)
    out: dict[int, dict[str, Series]] = {}
    undo = _patch()
    try:
        async with geeh.Client(endpoints) as client:
            for waiting in (1, 10, 1000):
                # At 1000 only the two ends, to keep the number of candidates reasonable.
                variants = list(VARIANTS) if waiting < 1000 else ["as is", "A + B + C"]
                series = {v: Series(v) for v in variants}
                queues = {
                    v: Queue(client, etcd, f"bench-whatif-{waiting}-{i}", waiting, VARIANTS[v])
                    for i, v in enumerate(variants)
                }
                try:
                    for q in queues.values():
                        await q.start()
                    await asyncio.sleep(0.3)
                    names = list(variants)
                    for k in range(rounds):
                        shift = k % len(names)
                        for v in names[shift:] + names[:shift]:
                            await asyncio.sleep(0.05)
                            series[v].add(await queues[v].handoff())
                finally:
                    for v, q in queues.items():
                        series[v].failures += q.extra_wins
                        await q.close()
                out[waiting] = series
    finally:
        undo()
        _MODES.clear()
    return out

"""Observing an election: every leader change, "no leader" included, none missed or repeated.

The observer reads every candidate once, then follows the prefix's watch. Candidates are kept
in create-revision order (a dict in insertion order: a new key always has the highest create
revision), so the leader after each revision is the first entry, with no further read. Events
are applied one revision at a time, so two changes in one watch response are both reported and
a waiting candidate is never mistaken for the leader. After a compaction the observer reads
again and reports only a leader that differs from the last one reported.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

from ._proto import kv_pb2 as kv
from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import ClosedError, Compacted, EtcdUnavailable
from .keys import show
from .leader import Leader
from .net.retry import RANGE, Backoff
from .watch import Watch

log = logging.getLogger("geeh.observe")

_UNSET = object()


class Observation:
    """An async iterator of :class:`~geeh.Leader` or None, from ``Election.observe()``."""

    def __init__(self, core: Core, prefix: bytes, end: bytes) -> None:
        self._core = core
        self._prefix = prefix
        self._end = end
        self._candidates: dict[bytes, kv.KeyValue] = {}
        self._pending: list[Leader | None] = []
        self._last: object = _UNSET
        self._watch: Watch | None = None
        self._closed = False
        self._backoff = Backoff(base=0.1, cap=2.0)
        core.observations.add(self)

    @property
    def leader(self) -> Leader | None:
        """The leader as of the last reported change (None before the first)."""
        return self._last if isinstance(self._last, Leader) else None

    def __aiter__(self) -> AsyncIterator[Leader | None]:
        return self

    async def __anext__(self) -> Leader | None:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            try:
                await self._advance()
            except ClosedError:
                self._close_watch()
                self._closed = True
                if self._core.closed or self._core.transport.closed:
                    raise StopAsyncIteration from None
                raise  # the watch stream stopped after a bug: a failure, not a close
            except EtcdUnavailable as err:
                # An observer outlives outages: it waits for etcd as it waits for changes.
                log.warning("observer of %s: %s; retrying", show(self._prefix[:-1]), err)
                await asyncio.sleep(self._backoff.next_delay())
            else:
                self._backoff.reset()
        return self._pending.pop(0)

    async def _advance(self) -> None:
        if self._watch is None:
            await self._resync()
            return
        try:
            batch = await self._watch.next()
        except Compacted:
            self._close_watch()
            return
        revision = 0
        for event in batch.events:
            if event.kv.mod_revision != revision and revision:
                self._report()
            revision = event.kv.mod_revision
            if event.type == kv.Event.DELETE:
                self._candidates.pop(event.kv.key, None)
            else:
                self._candidates[event.kv.key] = event.kv
        self._report()

    async def _resync(self) -> None:
        response = await self._core.transport.call(
            RANGE,
            rpc.RangeRequest(
                key=self._prefix,
                range_end=self._end,
                sort_order=rpc.RangeRequest.ASCEND,
                sort_target=rpc.RangeRequest.CREATE,
            ),
            what="observe election",
        )
        self._candidates = {item.key: item for item in response.kvs}
        self._report()
        self._watch = self._core.watches.watch(
            self._prefix, range_end=self._end, start_revision=response.header.revision + 1
        )
        weakref.finalize(self, self._watch.cancel)

    def _report(self) -> None:
        first = next(iter(self._candidates.values()), None)
        leader = Leader.from_kv(first) if first is not None else None
        if leader != self._last:
            self._last = leader
            self._pending.append(leader)

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def aclose(self) -> None:
        """Stop observing. Safe to call more than once."""
        self._closed = True
        self._pending.clear()
        self._close_watch()
        self._core.observations.discard(self)

    async def __aenter__(self) -> Observation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

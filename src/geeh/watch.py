"""Watches: many logical watches multiplexed over one resumable gRPC stream per client.

Each :class:`Watch` remembers the next revision it needs. When the stream breaks, or the
member behind it fails, the hub re-opens the stream on the pinned member and re-creates every
watch from that revision, so consumers see every event once, in order, across failover. A
watch whose revision was compacted ends with :class:`Compacted`; its consumer re-reads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._proto import kv_pb2 as kv
from ._proto import rpc_pb2 as rpc
from .errors import ClosedError, Compacted, EtcdError, StreamUnauthenticated
from .net.failover import Transport
from .net.retry import RANGE, WATCH_PATH
from .net.stream import ResumableStream

log = logging.getLogger("geeh.watch")

NOPUT = rpc.WatchCreateRequest.NOPUT

# Why probe: a client that only watches (an observer, a waiting candidate with a shared
# session kept alive elsewhere) sends nothing on its own, so a frozen member (SIGSTOP, a hung
# host: TCP still open) would only be noticed by gRPC's keepalive, 10 s ping + 5 s timeout.
# When the stream has been silent PROBE_IDLE seconds while watches are active, the hub sends a
# progress request (etcd >= 3.4 answers it at once, whatever is watched); if nothing at all
# arrives within PROBE_TIMEOUT the member is reported failed and every watch moves. The cost
# is one small message per idle period per client.
PROBE_IDLE = 3.0
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one watch response; ``revision`` is the response header's revision."""

    revision: int
    events: Sequence[kv.Event]


T = TypeVar("T")


class Mailbox(Generic[T]):
    """An unbounded queue: a list of items and the futures of whoever waits for one.

    Why not asyncio.Queue: a client holding thousands of elections holds one per watch, and
    a Queue carries three deques and an Event, about 2.5 KiB, where this needs a list.
    """

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[T] = []  # rarely more than one: a list is the smallest container
        self._waiters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        # Wake every waiter (there is rarely more than one): whoever runs first takes the
        # item, the others wait again, and a waiter cancelled meanwhile loses nothing.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, waiting for one."""
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        return self._items.pop(0)


# Where a watch delivers: (the watch, a batch or the exception that ended it). Several watches
# may share one, so that a consumer waits on all of them at once, in arrival order.
Inbox = Mailbox[tuple["Watch", "Batch | BaseException"]]


class Watch:
    """One logical watch. Iterate it for batches; ``cancel()`` (or the hub's close) ends it."""

    __slots__ = (
        "_ended",
        "_hub",
        "_queue",
        "filters",
        "key",
        "next_revision",
        "range_end",
        "watch_id",
    )

    def __init__(
        self,
        hub: WatchHub,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        filters: Sequence[rpc.WatchCreateRequest.FilterType],
        queue: Inbox | None,
    ) -> None:
        self._hub = hub
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.filters = tuple(filters)
        self.watch_id = 0
        self._queue: Inbox = Mailbox() if queue is None else queue
        self._ended = False

    def _deliver(self, item: Batch | BaseException) -> None:
        if not self._ended:
            if isinstance(item, BaseException):
                self._ended = True
            self._queue.put_nowait((self, item))

    async def next(self) -> Batch:
        """The next batch of events; raises Compacted or ClosedError when the watch ends.

        Not for a watch made with a shared ``queue``: read the queue instead.
        """
        entry = await self._queue.get()
        item = entry[1]
        if isinstance(item, BaseException):
            self._queue.put_nowait(entry)  # stays ended for any later call
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self

    async def __anext__(self) -> Batch:
        try:
            return await self.next()
        except ClosedError:
            raise StopAsyncIteration from None

    def cancel(self) -> None:
        """Stop this watch; pending batches are dropped. Safe to call more than once."""
        if not self._ended:
            self._deliver(ClosedError("watch cancelled"))
            self._hub._remove(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class WatchHub(ResumableStream[rpc.WatchRequest, rpc.WatchResponse]):
    """Owns the client's watch stream and every watch multiplexed over it."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport, WATCH_PATH, rpc.WatchRequest, rpc.WatchResponse, "watch")
        self._watches: dict[int, Watch] = {}
        self._ids = itertools.count(1)
        self._opens = 0

    def watch(
        self,
        key: bytes,
        *,
        range_end: bytes = b"",
        start_revision: int,
        filters: Sequence[rpc.WatchCreateRequest.FilterType] = (),
        queue: Inbox | None = None,
    ) -> Watch:
        """Start watching ``key`` (to ``range_end``) from ``start_revision``.

        Returns at once: events from ``start_revision`` on are delivered however long the
        server takes to confirm the watch. With ``queue``, they go there, tagged with the
        watch, instead of to :meth:`Watch.next`.
        """
        self.start()
        w = Watch(self, key, range_end, start_revision, filters, queue)
        w.watch_id = next(self._ids)
        self._watches[w.watch_id] = w
        self.send(_create(w))
        return w

    def _remove(self, w: Watch) -> None:
        if self._watches.pop(w.watch_id, None) is not None:
            self.send(rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=w.watch_id)))

    @property
    def active(self) -> int:
        return len(self._watches)

    def opened(self) -> None:
        self._opens += 1
        if self._opens > 1 and self._watches:
            self._transport.events.watch_resumed(self._transport.endpoint, len(self._watches))
        # Newest first: etcd confirms re-created watches one by one, and the newest are the
        # ones a hand-off waits on (a waiting candidate's watch is renewed at each hand-off).
        for w in reversed(self._watches.values()):
            self.send(_create(w))

    async def before_open(self) -> None:
        """End with Compacted every watch whose next revision is compacted, before re-creating.

        Why: etcd accepts a watch from exactly the compaction revision, but compaction drops
        a deletion's tombstone at that revision, so such a watch silently misses the delete
        (seen in the compaction test: a waiting candidate never saw its predecessor go). A
        read at next_revision - 1 fails with "compacted" exactly when next_revision <= the
        compaction revision; the consumer then re-reads, as for any compacted watch.
        Compaction is global, so the watches are checked oldest first and the first that
        passes clears all the rest: usually one read per re-open. Only etcd's "required
        revision has been compacted" means compaction; a "future revision" means a member
        behind, where none of the watches can be compacted yet.
        """
        for w in sorted(self._watches.values(), key=lambda w: w.next_revision):
            if w.next_revision <= 1:
                continue
            try:
                await self._transport.call(
                    RANGE,
                    rpc.RangeRequest(
                        key=w.key,
                        revision=w.next_revision - 1,
                        serializable=True,
                        count_only=True,
                    ),
                    timeout=self._transport.attempt_timeout,
                    what="resume watch",
                )
                return
            except EtcdError as err:
                if err.code != "OUT_OF_RANGE":
                    raise
                if "future revision" in str(err):
                    return  # this member is behind even the oldest watch: none is compacted
                if "required revision has been compacted" not in str(err):
                    raise  # another refusal: back off and try again
                if self._watches.pop(w.watch_id, None) is not None:
                    w._deliver(Compacted(w.next_revision - 1))

    async def watchdog(self, endpoint: str) -> None:
        """Raise ConnectionError if the member stays silent after a progress request."""
        while True:
            if not self._watches:
                await asyncio.sleep(PROBE_IDLE)  # nothing to lose on this member
                continue
            # A session's keepalives already check this member, with a timeout of their own:
            # no probe while they cover it.
            covered = self._transport.covered.get(endpoint, 0.0) - time.monotonic()
            if covered > 0:
                await asyncio.sleep(covered)
                continue
            # Any answer from this member counts as proof of life.
            idle = time.monotonic() - max(self.heard, self._transport.heard.get(endpoint, 0.0))
            if idle < PROBE_IDLE:
                await asyncio.sleep(PROBE_IDLE - idle)
                continue
            sent = time.monotonic()
            self.send(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
            await asyncio.sleep(PROBE_TIMEOUT)
            if max(self.heard, self._transport.heard.get(endpoint, 0.0)) < sent:
                raise ConnectionError(
                    f"watch stream: no answer from {endpoint} to a progress request "
                    f"within {PROBE_TIMEOUT:g}s"
                )

    def received(self, response: rpc.WatchResponse) -> None:
        if response.canceled and self._transport.auth is not None:
            reason = response.cancel_reason
            if "permission denied" in reason or "invalid auth token" in reason:
                # The stream's token expired (etcd checks it per watch; 3.4 says "invalid auth
                # token" with watch ID -1, naming no watch): re-open, re-authenticated.
                raise StreamUnauthenticated(f"watch refused: {reason}")
        w = self._watches.get(response.watch_id)
        if w is None:
            return  # cancelled by us, or a progress notification
        if response.canceled:
            if response.compact_revision:
                self._watches.pop(w.watch_id, None)
                w._deliver(Compacted(response.compact_revision))
                return
            # Cancelled by the server for another reason ("no leader"): leave this member.
            raise ConnectionError(f"watch cancelled by etcd: {response.cancel_reason}")
        if response.events:
            w.next_revision = response.events[-1].kv.mod_revision + 1
            w._deliver(Batch(response.header.revision, response.events))

    def failed(self, err: ClosedError) -> None:
        self._end_all(err)
        super().failed(err)

    def _end_all(self, err: ClosedError) -> None:
        watches, self._watches = list(self._watches.values()), {}
        for w in watches:
            w._deliver(err)

    async def close(self) -> None:
        if not self._closed:
            self._end_all(ClosedError("the client is closed"))
        await super().close()


def _create(w: Watch) -> rpc.WatchRequest:
    return rpc.WatchRequest(
        create_request=rpc.WatchCreateRequest(
            key=w.key,
            range_end=w.range_end,
            start_revision=w.next_revision,
            filters=w.filters,
            watch_id=w.watch_id,
        )
    )

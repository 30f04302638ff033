"""Watches: many logical watches multiplexed over one resumable gRPC stream per client.

Each :class:`Watch` remembers the next revision it needs. When the stream breaks, or the
member behind it fails, the hub re-opens the stream on the pinned member and re-creates every
watch from that revision, so consumers see every event once, in order, across failover. A
watch whose revision was compacted ends with :class:`Compacted`; its consumer re-reads.

Why every watch is created one revision early: etcd accepts a watch from exactly the
compaction revision, but compaction drops a deletion's tombstone at that revision, so such a
watch would silently miss the deletion. Created from ``next_revision - 1``, etcd itself
refuses the watch (compact_revision set) whenever ``next_revision`` <= the compaction
revision, and whatever it delivers at ``next_revision - 1`` was seen already and is dropped.
etcd makes that check on the stream when it serves the watch, so a compaction that lands
while the create is on its way is caught too, on whichever member the stream is.

An answer about one watch ends that watch, and the stream goes on for the others: a
compaction ends it with :class:`Compacted`, a refused permission with
:class:`PermissionDenied` (after one re-authentication per token, since an expired token is
refused in the same words). Only a member-level answer ("no leader") moves the stream.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._proto import kv_pb2 as kv
from ._proto import rpc_pb2 as rpc
from .errors import ClosedError, Compacted, EtcdError, PermissionDenied, StreamUnauthenticated
from .keys import show
from .net.failover import Transport
from .net.retry import WATCH_PATH
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
        "refused_with",
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
        # The stream's token when etcd last refused this watch; refused again with another
        # (fresh) token, the refusal is about permission, not an expired token.
        self.refused_with: str | None = None
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
        # The IDs of the watches created on the current stream and not yet answered, in
        # order: etcd answers creates in order, and etcd 3.4 refuses one with watch ID -1.
        self._unanswered: collections.deque[int] = collections.deque()

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
        if self.send(_create(w)):
            self._unanswered.append(w.watch_id)
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
        self._unanswered.clear()
        for w in reversed(self._watches.values()):
            self.send(_create(w))
            self._unanswered.append(w.watch_id)

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
        watch_id = response.watch_id
        if response.created and self._unanswered:
            answered = self._unanswered.popleft()
            if watch_id == -1:
                watch_id = answered  # a refusal naming no watch (etcd 3.4): the oldest create
        w = self._watches.get(watch_id)
        if response.canceled:
            if w is not None:
                self._cancelled(w, response)
            elif watch_id == -1 and _refused(response):
                # Names no watch and answers no create of ours: the stream's token expired.
                raise StreamUnauthenticated(f"watch refused: {response.cancel_reason}")
            return  # the answer to our own cancel
        if w is None:
            return  # cancelled by us, or a progress notification
        if response.created:
            w.refused_with = None  # accepted: a later refusal may be an expired token again
        # Created one revision early (see the module's docstring): drop what was seen.
        events = [e for e in response.events if e.kv.mod_revision >= w.next_revision]
        if events:
            w.next_revision = events[-1].kv.mod_revision + 1
            w._deliver(Batch(response.header.revision, events))

    def _cancelled(self, w: Watch, response: rpc.WatchResponse) -> None:
        """etcd ended a watch: end it with the reason, or leave the member if it is at fault."""
        reason = response.cancel_reason
        refused = _refused(response)
        if response.compact_revision:
            self._end(w, Compacted(response.compact_revision))
        elif refused and self._transport.auth is not None:
            if w.refused_with is None or w.refused_with == self.token:
                # Maybe the stream's token expired (etcd checks it per watch, in the same
                # words): re-open once, re-authenticated. Refused again with the fresh token,
                # it is the user's permission.
                w.refused_with = self.token
                raise StreamUnauthenticated(f"watch refused: {reason}")
            user = self._transport.auth.username
            self._end(
                w, PermissionDenied(f"watch on {show(w.key)} refused to user {user!r}: {reason}")
            )
        elif refused:
            self._end(w, PermissionDenied(f"watch on {show(w.key)} refused: {reason}"))
        elif "no leader" in reason or not reason:
            # The member's state, not this watch's: another member may serve it.
            raise ConnectionError(f"watch cancelled by etcd: {reason or 'no reason given'}")
        else:
            self._end(w, EtcdError(f"watch on {show(w.key)} cancelled by etcd: {reason}"))

    def _end(self, w: Watch, err: BaseException) -> None:
        if self._watches.pop(w.watch_id, None) is not None:
            w._deliver(err)

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


def _refused(response: rpc.WatchResponse) -> bool:
    reason = response.cancel_reason
    return "permission denied" in reason or "invalid auth token" in reason


def _create(w: Watch) -> rpc.WatchRequest:
    # One revision early, so that etcd refuses it if next_revision is compacted (see above).
    start = w.next_revision - 1 if w.next_revision > 1 else w.next_revision
    return rpc.WatchRequest(
        create_request=rpc.WatchCreateRequest(
            key=w.key,
            range_end=w.range_end,
            start_revision=start,
            filters=w.filters,
            watch_id=w.watch_id,
        )
    )

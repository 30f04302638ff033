"""Watches: many logical watches multiplexed over one resumable gRPC stream per client.

Each :class:`Watch` remembers the next revision it needs. When the stream breaks, or the
member behind it fails, the hub re-opens the stream on the pinned member and re-creates every
watch from that revision, so consumers see every event once, in order, across failover. A
watch whose revision was compacted ends with :class:`Compacted`; its consumer re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from ._proto import kv_pb2 as kv
from ._proto import rpc_pb2 as rpc
from .errors import ClosedError, EtcdError
from .failover import RANGE, WATCH_PATH, Backoff, Transport

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


class Compacted(Exception):
    """The revision a watch needed has been compacted away: read afresh, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one watch response; ``revision`` is the response header's revision."""

    revision: int
    events: Sequence[kv.Event]


class Watch:
    """One logical watch. Iterate it for batches; ``cancel()`` (or the hub's close) ends it."""

    def __init__(
        self,
        hub: WatchHub,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        filters: Sequence[rpc.WatchCreateRequest.FilterType],
    ) -> None:
        self._hub = hub
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.filters = tuple(filters)
        self.watch_id = 0
        self._queue: asyncio.Queue[Batch | BaseException] = asyncio.Queue()
        self._ended = False

    def _deliver(self, item: Batch | BaseException) -> None:
        if not self._ended:
            if isinstance(item, BaseException):
                self._ended = True
            self._queue.put_nowait(item)

    async def next(self) -> Batch:
        """The next batch of events; raises Compacted or ClosedError when the watch ends."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # stays ended for any later call
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


class WatchHub:
    """Owns the client's watch stream and every watch multiplexed over it."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._watches: dict[int, Watch] = {}
        self._ids = itertools.count(1)
        self._outbox: asyncio.Queue[rpc.WatchRequest] | None = None
        self._task: asyncio.Task[None] | None = None
        self._heard = 0.0  # when the current stream last delivered anything
        self._closed = False

    def watch(
        self,
        key: bytes,
        *,
        range_end: bytes = b"",
        start_revision: int,
        filters: Sequence[rpc.WatchCreateRequest.FilterType] = (),
    ) -> Watch:
        """Start watching ``key`` (to ``range_end``) from ``start_revision``.

        Returns at once: events from ``start_revision`` on are delivered however long the
        server takes to confirm the watch.
        """
        if self._closed:
            raise ClosedError("the client is closed")
        w = Watch(self, key, range_end, start_revision, filters)
        w.watch_id = next(self._ids)
        self._watches[w.watch_id] = w
        if self._outbox is not None:
            self._outbox.put_nowait(_create(w))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="geeh-watch")
        return w

    def _remove(self, w: Watch) -> None:
        if self._watches.pop(w.watch_id, None) is not None and self._outbox is not None:
            self._outbox.put_nowait(
                rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=w.watch_id))
            )

    @property
    def active(self) -> int:
        return len(self._watches)

    async def _run(self) -> None:
        backoff = Backoff()
        resumed = False
        while not self._closed:
            transport = self._transport
            if resumed:
                try:
                    await self._drop_compacted()
                except ClosedError:
                    return
                except EtcdError as error:
                    log.debug("watch resume: %s", error)
                    await asyncio.sleep(backoff.next_delay())
                    continue
            resumed = True
            endpoint, generation = transport.endpoint, transport.generation
            outbox: asyncio.Queue[rpc.WatchRequest] = asyncio.Queue()
            for w in self._watches.values():
                outbox.put_nowait(_create(w))
            self._outbox = outbox
            self._heard = time.monotonic()
            transport.count(WATCH_PATH)
            call = transport.channel(endpoint).stream_stream(
                WATCH_PATH,
                request_serializer=rpc.WatchRequest.SerializeToString,
                response_deserializer=rpc.WatchResponse.FromString,
            )(_drain(outbox), metadata=transport.metadata())
            reader = asyncio.ensure_future(self._read(call, backoff))
            prober = asyncio.ensure_future(self._probe(outbox, endpoint))
            moved = asyncio.ensure_future(transport.wait_moved(generation))
            try:
                await asyncio.wait({reader, prober, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._outbox = None
                call.cancel()
                for t in (reader, prober, moved):
                    t.cancel()
                await asyncio.gather(reader, prober, moved, return_exceptions=True)
            err = next(
                (t.exception() for t in (reader, prober) if t.done() and not t.cancelled()),
                None,
            )
            if err is not None and not self._closed:
                transport.fail(endpoint, err)
                # Backoff only grows while no member answers anything (reset in _read), so a
                # cluster without quorum that rejects every stream at once is not hammered.
                await asyncio.sleep(backoff.next_delay())

    async def _read(self, call: grpc.aio.StreamStreamCall[Any, Any], backoff: Backoff) -> None:
        try:
            async for response in call:
                self._heard = time.monotonic()
                backoff.reset()
                self._dispatch(response)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and self._closed:
                return
            raise ConnectionError(f"watch stream: {err.code().name} {err.details()}") from None
        raise ConnectionError("watch stream ended")

    async def _drop_compacted(self) -> None:
        """End with Compacted every watch whose next revision is compacted, before re-creating.

        Why: etcd accepts a watch from exactly the compaction revision, but compaction drops
        a deletion's tombstone at that revision, so such a watch silently misses the delete
        (seen in the compaction test: a waiting candidate never saw its predecessor go). A
        read at next_revision - 1 fails with "compacted" exactly when next_revision <= the
        compaction revision; the consumer then re-reads, as for any compacted watch. Only
        done when a stream is re-opened (failover), where the gap in time makes it likely.
        """
        for w in list(self._watches.values()):
            if w.next_revision <= 1:
                continue
            try:
                await self._transport.call(
                    RANGE,
                    rpc.RangeRequest(
                        key=w.key,
                        range_end=w.range_end,
                        revision=w.next_revision - 1,
                        serializable=True,
                        count_only=True,
                    ),
                    timeout=self._transport.attempt_timeout,
                    what="resume watch",
                )
            except EtcdError as err:
                if err.code != "OUT_OF_RANGE":
                    raise
                if self._watches.pop(w.watch_id, None) is not None:
                    w._deliver(Compacted(w.next_revision - 1))

    async def _probe(self, outbox: asyncio.Queue[rpc.WatchRequest], endpoint: str) -> None:
        """Raise ConnectionError if the member stays silent after a progress request."""
        while True:
            if not self._watches:
                await asyncio.sleep(PROBE_IDLE)  # nothing to lose on this member
                continue
            idle = time.monotonic() - self._heard
            if idle < PROBE_IDLE:
                await asyncio.sleep(PROBE_IDLE - idle)
                continue
            sent = time.monotonic()
            outbox.put_nowait(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
            await asyncio.sleep(PROBE_TIMEOUT)
            if self._heard < sent:
                raise ConnectionError(
                    f"watch stream: no answer from {endpoint} to a progress request "
                    f"within {PROBE_TIMEOUT:g}s"
                )

    def _dispatch(self, response: rpc.WatchResponse) -> None:
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

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in list(self._watches.values()):
            w._deliver(ClosedError("the client is closed"))
        self._watches.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


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


async def _drain(outbox: asyncio.Queue[rpc.WatchRequest]) -> AsyncIterator[rpc.WatchRequest]:
    while True:
        yield await outbox.get()

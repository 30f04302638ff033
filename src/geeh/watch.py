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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from ._proto import kv_pb2 as kv
from ._proto import rpc_pb2 as rpc
from .errors import ClosedError
from .failover import WATCH_PATH, Backoff, Transport

log = logging.getLogger("geeh.watch")

NOPUT = rpc.WatchCreateRequest.NOPUT


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
        while not self._closed:
            transport = self._transport
            endpoint, generation = transport.endpoint, transport.generation
            outbox: asyncio.Queue[rpc.WatchRequest] = asyncio.Queue()
            for w in self._watches.values():
                outbox.put_nowait(_create(w))
            self._outbox = outbox
            transport.count(WATCH_PATH)
            call = transport.channel(endpoint).stream_stream(
                WATCH_PATH,
                request_serializer=rpc.WatchRequest.SerializeToString,
                response_deserializer=rpc.WatchResponse.FromString,
            )(_drain(outbox), metadata=transport.metadata())
            reader = asyncio.ensure_future(self._read(call, backoff))
            moved = asyncio.ensure_future(transport.wait_moved(generation))
            try:
                await asyncio.wait({reader, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._outbox = None
                call.cancel()
                for t in (reader, moved):
                    t.cancel()
                await asyncio.gather(reader, moved, return_exceptions=True)
            if reader.done() and not reader.cancelled():
                err = reader.exception()
                if err is not None and not self._closed:
                    transport.fail(endpoint, err)
                    await asyncio.sleep(backoff.next_delay())

    async def _read(self, call: grpc.aio.StreamStreamCall[Any, Any], backoff: Backoff) -> None:
        try:
            async for response in call:
                backoff.reset()
                self._dispatch(response)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and self._closed:
                return
            raise ConnectionError(f"watch stream: {err.code().name} {err.details()}") from None
        raise ConnectionError("watch stream ended")

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

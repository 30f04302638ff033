"""Streams that resume on another member: the watch and keepalive streams survive failover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Generic, cast

import grpc
import grpc.aio

from ..errors import ClosedError, EtcdError, StreamUnauthenticated
from .failover import Transport, serialize
from .retry import Backoff, Req, Resp

log = logging.getLogger("geeh.failover")


class ResumableStream(Generic[Req, Resp]):
    """One bidirectional stream kept open on the pinned member, re-opened after any failure.

    The watch hub and the lessor are both this: a stream that must survive failover. When
    the stream breaks, a subclass's watchdog raises, or the pin moves (another stream or a
    call saw the member fail), the stream is closed and opened again on the pinned member;
    :meth:`opened` then replays what the new stream must carry (watches to re-create,
    keepalives to resend). Failed re-opens back off with jitter; the backoff resets as soon
    as a member answers anything, so a cluster without quorum is not hammered.

    Only a connection or etcd error is the member's fault. Anything else is a bug, which
    another member would not cure: it is logged, the stream stops for good, and everything
    that depends on it ends with a ClosedError naming it (:meth:`failed`), so that its owners
    see it (a leadership turns it into a loss) instead of a stream re-opened in a loop.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        request: type[Req],
        response: type[Resp],
        name: str,
    ) -> None:
        self._transport = transport
        self._path = path
        self._request_type = request
        self._response_type = response
        self._name = name
        self._outbox: asyncio.Queue[Req | None] | None = None
        self._open: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stopped: str | None = None  # why the stream stopped for good, after a bug
        self.heard = 0.0  # when the current stream last delivered anything

    # -- for subclasses ------------------------------------------------------------------

    async def before_open(self) -> None:
        """Work to do before each re-open; an EtcdError here backs off and tries again."""

    def opened(self) -> None:
        """The stream is open: send what it must carry (``send`` works from here on)."""

    def received(self, response: Resp) -> None:
        """One response; raise ConnectionError to leave the member."""

    def stream_ended(self) -> None:
        """The stream is gone; fail or forget what was in flight on it."""

    def failed(self, err: ClosedError) -> None:
        """The stream stopped for good after a bug: end everything that depends on it."""
        self.stream_ended()

    async def watchdog(self, endpoint: str) -> None:
        """Raise ConnectionError to leave ``endpoint`` (e.g. it went silent). Default: never."""
        await asyncio.Event().wait()

    # -- for users -------------------------------------------------------------------------

    def start(self) -> None:
        self._check()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def send(self, request: Req) -> bool:
        """Queue ``request`` on the open stream; False if none is open (it will be replayed)."""
        if self._outbox is None:
            return False
        self._outbox.put_nowait(request)
        return True

    async def wait_open(self) -> None:
        """Start the stream if needed and wait until one is open."""
        self.start()
        while self._outbox is None:
            self._check()
            if self._open is None or self._open.done():
                self._open = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._open)

    def _check(self) -> None:
        if self._stopped is not None:
            raise ClosedError(self._stopped)
        if self._closed:
            raise ClosedError("the client is closed")

    def _wake(self, err: ClosedError) -> None:
        if self._open is not None and not self._open.done():
            self._open.set_exception(err)
            self._open.exception()  # retrieved: nobody may be waiting

    async def close(self) -> None:
        """Stop the stream and wait until it has stopped. Idempotent.

        A close that is itself cancelled raises CancelledError (the stream still stops; a
        second close waits for it).
        """
        if not self._closed:
            self._closed = True
            self._wake(ClosedError("the client is closed"))
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # Not ``await task``: its CancelledError would be indistinguishable from ours.
            await asyncio.wait({task})

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception as err:
            if isinstance(err, ClosedError) and (self._closed or self._transport.closed):
                return  # the client is closing
            log.error("%s stream stopped by an internal error", self._name, exc_info=err)
            self._stopped = f"the {self._name} stream stopped after an internal error: {err!r}"
            stopped = ClosedError(self._stopped)
            self._wake(stopped)
            self.failed(stopped)

    async def _loop(self) -> None:
        transport = self._transport
        backoff = Backoff()
        first = True
        while not self._closed:
            if not first:
                try:
                    await self.before_open()
                except EtcdError as err:
                    log.debug("%s: %s", self._name, err)
                    await asyncio.sleep(backoff.next_delay())
                    continue
            first = False
            endpoint, generation = transport.endpoint, transport.generation
            outbox: asyncio.Queue[Req | None] = asyncio.Queue()
            self._outbox = outbox
            self.heard = time.monotonic()
            self.opened()
            if self._open is not None and not self._open.done():
                self._open.set_result(None)
            transport.count(self._path)
            token = transport.token
            call = transport.channel(endpoint).stream_stream(
                self._path,
                request_serializer=serialize,
                response_deserializer=self._response_type.FromString,
            )(_drain(outbox), metadata=transport.metadata())
            reader = asyncio.ensure_future(self._read(call, backoff, endpoint))
            guard = asyncio.ensure_future(self.watchdog(endpoint))
            moved = asyncio.ensure_future(transport.wait_moved(generation))
            try:
                await asyncio.wait({reader, guard, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._outbox = None
                outbox.put_nowait(None)  # ends the request iterator, even if the call is over
                call.cancel()
                for task in (reader, guard, moved):
                    task.cancel()
                await asyncio.gather(reader, guard, moved, return_exceptions=True)
                self.stream_ended()
            failure = next(
                (t.exception() for t in (reader, guard) if t.done() and not t.cancelled()), None
            )
            if failure is None or self._closed:
                continue
            if not isinstance(failure, ConnectionError | EtcdError):
                raise failure  # a bug, not the member's fault
            if isinstance(failure, StreamUnauthenticated) and transport.auth is not None:
                with contextlib.suppress(EtcdError):  # if it fails, back off and try again
                    await transport.authenticate(stale=token)
                    continue
            transport.fail(endpoint, failure)
            await asyncio.sleep(backoff.next_delay())

    async def _read(
        self, call: grpc.aio.StreamStreamCall[Any, Any], backoff: Backoff, endpoint: str
    ) -> None:
        heard = self._transport.heard
        try:
            # read() rather than ``async for``: one async generator less per message.
            while (response := await call.read()) is not _EOF:
                heard[endpoint] = self.heard = time.monotonic()
                backoff.reset()
                self.received(cast(Resp, response))
        except grpc.aio.AioRpcError as err:
            message = f"{self._name} stream: {err.code().name} {err.details()}"
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise StreamUnauthenticated(message) from None
            raise ConnectionError(message) from None
        except grpc.RpcError as err:
            raise ConnectionError(f"{self._name} stream: {err}") from None
        raise ConnectionError(f"{self._name} stream ended")


_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


async def _drain(outbox: asyncio.Queue[Req | None]) -> AsyncIterator[Req]:
    while (request := await outbox.get()) is not None:
        yield request

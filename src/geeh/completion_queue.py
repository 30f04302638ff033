"""ActiveCompletionQueue: the thread and event loop that the blocking API runs gee-h on.

Blocking calls are bounded: a call whose ``timeout`` passes cancels its operation (its
clean-up runs) and raises :class:`~geeh.Timeout`, a ``TimeoutError``. A call made on the
queue's own thread, which would wait for itself, raises :class:`~geeh.WrongThread` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from . import fork
from .client import Client
from .errors import ClosedError, Timeout, WrongThread

log = logging.getLogger("geeh.blocking")

T = TypeVar("T")
Endpoints = str | Sequence[str] | Client | None

# How long a blocking call whose timeout passed waits for its operation to wind down.
CANCEL_GRACE = 1.0


async def _bounded(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await coro
    except TimeoutError:
        if scope.expired():
            raise _timeout(timeout) from None
        raise


def _timeout(seconds: float) -> Timeout:
    return Timeout(f"the call did not finish within {seconds:g}s; it was cancelled")


class ActiveCompletionQueue:
    """A background thread running the event loop that drives gee-h's blocking API.

    Close it (or use ``with``) to stop everything it drives: elections resign, observers
    stop, clients it made are closed, and the thread is joined.
    """

    def __init__(self, name: str = "geeh-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._owned: list[Any] = []
        self._closed = False  # no new work from users
        self._stopped = False  # the loop no longer runs: no work at all
        self._closing = False  # a close is running (on some thread)
        self._finished = threading.Event()  # a close ran to its end
        self._closer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()  # its thread does not exist in a forked child: see fork.py
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the thread runs; create asyncio objects for it only through submit()."""
        return self._loop

    @property
    def forked(self) -> bool:
        """True in a process forked after the queue was made (its thread is not there)."""
        return fork.forked(self._pid)

    def check_fork(self) -> None:
        """Raise ForkedError in a process forked after the queue was made: no thread serves it."""
        fork.check(self._pid, "this gee-h completion queue")

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; returns a Future for its result."""
        if fork.forked(self._pid):
            coro.close()
            self.check_fork()
        if self._stopped:
            coro.close()
            raise ClosedError("the completion queue is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result.

        If ``timeout`` passes first, ``coro`` is cancelled (its clean-up runs) and
        :class:`~geeh.Timeout` is raised. On the queue's own thread it raises WrongThread.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise WrongThread(
                "a blocking gee-h call was made on the completion queue's own thread "
                "(in a callback that runs on its loop): it would wait for itself"
            )
        if timeout is None:
            return self.submit(coro).result()
        future = self.submit(_bounded(coro, timeout))
        try:
            return future.result(timeout + CANCEL_GRACE)
        except Timeout:
            raise
        except TimeoutError:
            if future.done():
                raise  # the operation's own TimeoutError
            future.cancel()  # its clean-up outlasted the grace: leave it cancelled
            raise _timeout(timeout) from None

    def client(self, endpoints: str | Sequence[str] | None = None, **options: Any) -> Client:
        """A connected :class:`Client` living on this queue's loop, closed with the queue.

        ``options`` are the Client's: ``tls=geeh.TLS(...)``, ``username``, ``password``...
        Pass the client to :class:`LeaderElection` or :func:`watch_election` in place of
        endpoints.
        """
        self.check_fork()
        if self._closed:
            raise ClosedError("the completion queue is closed")

        async def make() -> Client:
            client = Client(endpoints, **options)
            await client.connect()
            return client

        client = self.call(make())
        self._own(client)
        return client

    def _own(self, thing: Any) -> None:
        with self._lock:
            self._owned.append(thing)

    def _resolve(self, endpoints_or_client: Endpoints) -> tuple[Client, bool]:
        if isinstance(endpoints_or_client, Client):
            return endpoints_or_client, False
        return self.client(endpoints_or_client), True

    def close(self, timeout: float = 10.0) -> None:
        """Stop everything the queue drives and join its thread.

        Idempotent: a second call waits for the first to finish (or finishes what a first
        one that was cut off left). Called on the queue's own thread (from a callback that
        runs on its loop), it cannot wait for the loop: the close then runs on a thread of
        its own, and this call returns at once. In a process forked after the queue was
        made, it only drops the queue and what it drives (see :class:`~geeh.ForkedError`).
        """
        if fork.forked(self._pid):
            self._drop()
            return
        on_loop = threading.current_thread() is self._thread
        with self._lock:
            self._closed = True  # no new work from users
            if self._finished.is_set():
                return
            start = not self._closing
            self._closing = True
            if start and on_loop:
                self._closer = threading.Thread(
                    target=self._close, args=(timeout,), name="geeh-close"
                )
                self._closer.start()
                return
        if start:
            self._close(timeout)
        elif not on_loop:
            self._finished.wait(timeout)
            closer = self._closer
            if closer is not None and closer is not threading.current_thread():
                closer.join(timeout)

    def _drop(self) -> None:
        # In a forked child the loop's thread is gone and everything it drove talks through
        # the parent's channels: mark it all closed and keep it from being destroyed here.
        self._closed = self._stopped = True
        for thing in self._owned:
            if isinstance(thing, Client):
                thing.core.closed = True
                fork.abandon(thing.core.transport)
            else:
                thing._closed = True
        fork.abandon(self._owned, self._loop)
        self._owned = []
        self._finished.set()

    def _close(self, timeout: float) -> None:
        try:
            while True:
                with self._lock:
                    if not self._owned:
                        break
                    thing = self._owned[-1]  # newest first; removed once closed
                try:
                    if isinstance(thing, Client):
                        self.call(thing.close(), timeout)
                    else:
                        thing.close()
                except Exception as err:
                    log.warning("closing %r: %s", thing, err)
                with self._lock:
                    self._owned.remove(thing)

            async def cancel_rest() -> None:
                me = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not me]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._loop.shutdown_asyncgens()

            if not self._stopped:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(cancel_rest(), self._loop).result(timeout)
                self._stopped = True
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive() and not self._loop.is_closed():
                self._loop.close()
            self._finished.set()
        finally:
            self._closing = False

    def __enter__(self) -> ActiveCompletionQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

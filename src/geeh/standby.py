"""Standby: lead or stand by, forever, for blocking code that polls "do I lead now?".

A scheduler's loop (Celery beat's, say) is synchronous and asks before each send. A
:class:`Standby` campaigns in the background on an :class:`~geeh.ActiveCompletionQueue`,
holds the current :class:`~geeh.Leadership` while it lasts, and campaigns again after every
loss, and after every failure to reach etcd, until it is closed. It never gives up: a
process that lost leadership goes back to standing by instead of exiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .client import Client
from .completion_queue import ActiveCompletionQueue
from .errors import ClosedError, GeehError
from .keys import show
from .leadership import Leadership
from .net.retry import Backoff
from .tasks import stop

log = logging.getLogger("geeh.standby")

T = TypeVar("T")


class Standby:
    """Campaign for ``name`` on ``client`` (a Client living on ``queue``'s loop) until closed.

    ``current()`` is the leadership while we lead, else None; it is cleared the moment the
    leadership ends (a watch event, or the session's local deadline passing). Call
    :meth:`start` once; :meth:`close` resigns and stops the campaign, bounded.
    """

    def __init__(
        self, queue: ActiveCompletionQueue, client: Client, name: str, value: str, ttl: int
    ) -> None:
        self._queue = queue
        self._election = client.election(name)
        self._value = value
        self._ttl = ttl
        self._leadership: Leadership | None = None
        self._elected = threading.Event()
        self._future: concurrent.futures.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None  # the campaign, on the loop

    def start(self) -> None:
        """Start campaigning in the background."""
        if self._future is None:
            self._future = self._queue.submit(self._run())
            self._future.add_done_callback(self._ended)

    def _ended(self, future: concurrent.futures.Future[None]) -> None:
        # The owner of the background campaign: its failure is reported, never lost.
        if not future.cancelled() and future.exception() is not None:
            log.error("campaign for %s stopped: %r", show(self._election.name), future.exception())

    async def _run(self) -> None:
        self._task = asyncio.current_task()
        backoff = Backoff(base=0.2, cap=2.0)
        while True:
            try:
                await self._election.run(self._lead, self._value, ttl=self._ttl)
                return  # the client was closed
            except ClosedError:
                return
            except GeehError as err:  # etcd unreachable or refusing: campaign again, gently
                log.warning(
                    "campaign for %s failed: %s; trying again", show(self._election.name), err
                )
            except Exception:  # a bug must not leave this process a standby forever, silently
                log.exception("campaign for %s failed; trying again", show(self._election.name))
            await asyncio.sleep(backoff.next_delay())

    async def _lead(self, leadership: Leadership) -> None:
        self._leadership = leadership
        self._elected.set()
        log.info("leading %s (token %d)", show(leadership.name), leadership.token)
        try:
            await asyncio.Future()  # until the supervisor cancels us: leadership is over
        finally:
            self._elected.clear()
            self._leadership = None
            log.info("no longer leading %s; standing by", show(leadership.name))

    def current(self) -> Leadership | None:
        """The leadership while we lead, else None; from any thread (``is_leader`` reads the
        session's deadline without acting on the loop's objects)."""
        self._queue.check_fork()  # a forked child's copy of a term is the parent's, not ours
        leadership = self._leadership
        return leadership if leadership is not None and leadership.is_leader else None

    def wait_elected(self, timeout: float) -> Leadership | None:
        """Block until we lead (the leadership) or ``timeout`` passes (None)."""
        self._elected.wait(timeout)
        return self.current()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the queue's loop and wait for it (see ActiveCompletionQueue.call)."""
        return self._queue.call(coro, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop campaigning; resign if we lead. Bounded by ``timeout``; harmless twice."""
        future, self._future = self._future, None
        if future is None or self._queue.forked:
            return
        with contextlib.suppress(Exception):
            self._queue.call(self._stop(future), timeout)
        future.cancel()  # if the loop did not answer in time: at least no new term

    async def _stop(self, future: concurrent.futures.Future[None]) -> None:
        # The supervisor resigns as it unwinds; wait for that, not only for the cancel.
        if self._task is not None:
            await stop(self._task, f"campaign for {show(self._election.name)}")
        else:
            future.cancel()

"""Run work only while leader, again and again: client-go's RunOrDie, kazoo's Election.run.

    loop:
        campaign; once elected, start work(leadership) as a task
        wait for the first of: work returns or raises, leadership is lost
        on loss: cancel work and wait until it has finished (never campaign while it runs)
        resign if we still lead; stop, or campaign again after a jittered pause

The safety promise, at most one work running across all candidates, rests on the timing of
a loss. A loss at the session's local deadline is signalled at least ``safety_margin(ttl)``
(10 % of the TTL, 0.1 s to 1 s) before etcd can expire our lease and let anyone else win; the
default grace is that margin, so work that honours cancellation within its grace is over
before another candidate can lead. A loss seen as a watch event (our key deleted or lease
revoked by someone else) is reported as the successor is told: work should then stop at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errors import ClosedError, InvalidArgument
from .keys import show
from .leadership import Leadership
from .net.retry import Backoff
from .session import safety_margin

log = logging.getLogger("geeh.supervisor")

Work = Callable[[Leadership], Awaitable[Any]]
OnElected = Callable[[Leadership], object]
OnLost = Callable[[Leadership, BaseException | None], object]


class Campaigner(Protocol):
    """What a supervisor campaigns in: an :class:`~geeh.Election` (which imports this module,
    so this one names only the method it calls)."""

    def campaign(self, value: str | bytes, *, ttl: int | None = None) -> Awaitable[Leadership]:
        """Run for leader with ``value``; the awaited result is the won leadership."""
        ...


class Supervisor:
    """Campaign, run ``work`` while leader, stop it on loss, repeat; see :meth:`Election.run`."""

    def __init__(
        self,
        election: Campaigner,
        work: Work,
        value: str | bytes,
        *,
        ttl: int,
        again: bool,
        grace: float | None,
        on_elected: OnElected | None,
        on_lost: OnLost | None,
    ) -> None:
        if not callable(work):
            raise InvalidArgument(f"work must be an async function, not {type(work).__name__}")
        if grace is not None and not grace >= 0:
            raise InvalidArgument(f"grace must be a number of seconds >= 0, got {grace!r}")
        self.election = election
        self.work = work
        self.value = value
        self.ttl = ttl
        self.again = again
        self.grace = grace
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.terms = 0  # how many times work was started

    async def run(self) -> Any:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            try:
                leadership = await self.election.campaign(self.value, ttl=self.ttl)
            except ClosedError:
                return None  # the client closed: nothing to supervise any more
            self.terms += 1
            _call(self.on_elected, leadership)
            try:
                outcome = await self._term(leadership)
            except ClosedError:
                return None
            if not self.again and outcome is not None:
                return outcome.result()
            await asyncio.sleep(backoff.next_delay() if leadership.lost.reason else 0.0)
            if outcome is not None:
                backoff.reset()

    async def _term(self, leadership: Leadership) -> asyncio.Future[Any] | None:
        """One term of leadership; returns the finished work, or None if leadership was lost."""
        name = show(leadership.name)
        task = asyncio.get_running_loop().create_task(
            _run_work(self.work, leadership), name=f"geeh-work-{name}"
        )
        lost = asyncio.ensure_future(leadership.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._stop(task, leadership)
            await _resign(leadership)
            raise
        finally:
            lost.cancel()
        if not task.done():
            await self._stop(task, leadership)
            _call(self.on_lost, leadership, leadership.lost.reason)
            if leadership.lost.reason is None and not leadership.is_leader:
                raise ClosedError("the client was closed")
            return None
        if task.exception() is not None and self.again:
            log.error("work for %s raised; resigning", name, exc_info=task.exception())
        await _resign(leadership)
        _call(self.on_lost, leadership, None)
        return task

    async def _stop(self, task: asyncio.Task[Any], leadership: Leadership) -> None:
        """Cancel work and wait until it has finished, warning once its grace is over."""
        grace = self.grace if self.grace is not None else safety_margin(leadership.session.ttl)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=grace)  # wait() never cancels
        if not done:
            log.error(
                "work for %s still runs %.2fs after leadership ended; it must stop on "
                "cancellation: waiting for it",
                show(leadership.name),
                grace,
            )
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "work for %s raised while stopping",
                show(leadership.name),
                exc_info=task.exception(),
            )


async def _run_work(work: Work, leadership: Leadership) -> Any:
    return await work(leadership)


async def _resign(leadership: Leadership) -> None:
    if leadership.is_leader:
        try:
            await leadership.resign()
        except Exception as err:  # it expires by itself: the loss path covers it
            log.warning("resign of %s failed: %s", show(leadership.name), err)


def _call(callback: Callable[..., object] | None, *args: Any) -> None:
    """Run a user's callback; one that raises is logged and changes nothing."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("callback %r raised", callback)

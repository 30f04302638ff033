"""Run work only while leader, again and again: client-go's RunOrDie, kazoo's Election.run.

    loop:
        campaign (again=True: a failed campaign is retried after a jittered pause)
        once elected: on_elected; still leader? else back to campaigning
        start work(leadership) as a task
        wait for the first of: work ends (returns, raises, is cancelled), leadership is lost
        finally, on every path: cancel work if it runs and wait until it has finished,
        then resign if we still lead, then on_lost; stop, or campaign again

Every path waits for the work, a cancellation of ``run()`` itself included: a term is over
only when its work has ended. A work task that ends with a CancelledError we did not send
(it awaited something that other code cancelled) is a finished term like any other: we
resign, and run() raises CancelledError only if its own caller cancelled it.

The safety promise, at most one work running across all candidates, rests on the timing of
a loss. A loss at the session's local deadline is signalled at least ``safety_margin(ttl)``
(10 % of the TTL, 0.1 s to 1 s) before etcd can expire our lease and let anyone else win; the
default grace is that margin, so work that honours cancellation within its grace is over
before another candidate can lead. A loss seen as a watch event (our key deleted or lease
revoked by someone else) is reported as the successor is told: work should then stop at once.
Work that ignores cancellation is waited for (with an error logged once its grace is over):
nothing else happens meanwhile, but another candidate may then lead while it still runs.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errors import ClosedError, ElectionError, EtcdUnavailable, InvalidArgument
from .keys import show
from .leadership import Leadership
from .net.retry import Backoff
from .session import check_ttl, safety_margin

log = logging.getLogger("geeh.supervisor")

Work = Callable[[Leadership], Awaitable[Any]]
OnElected = Callable[[Leadership], object]
OnLost = Callable[[Leadership, BaseException | None], object]


class Ended(enum.Enum):
    """How a term without a finished work ended."""

    LOST = "leadership was lost"
    CLOSED = "the client was closed"


class Campaigner(Protocol):
    """What a supervisor campaigns in: an :class:`~geeh.Election` (which imports this module,
    so this one names only the method it calls)."""

    def campaign(self, value: str | bytes, *, ttl: int | None = None) -> Awaitable[Leadership]:
        """Run for leader with ``value``; the awaited result is the won leadership."""
        ...


class Supervisor:
    """Campaign, run ``work`` while leader, stop it on loss, repeat; see :meth:`Election.run`.

    ``election`` needs only ``campaign(value, ttl=...)``, awaitable for a Leadership.
    """

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
        backoff: Backoff | None = None,
    ) -> None:
        if not callable(work):
            raise InvalidArgument(f"work must be an async function, not {type(work).__name__}")
        if grace is not None and not grace >= 0:
            raise InvalidArgument(f"grace must be a number of seconds >= 0, got {grace!r}")
        for what, callback in (("on_elected", on_elected), ("on_lost", on_lost)):
            if callback is not None and not callable(callback):
                raise InvalidArgument(f"{what} must be callable, not {type(callback).__name__}")
        self.election = election
        self.work = work
        self.value = value
        self.ttl = check_ttl(ttl)
        self.again = again
        self.grace = grace
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.backoff = backoff if backoff is not None else Backoff(base=0.1, cap=5.0)
        # An async callback is awaited at most this long, then cancelled.
        self.callback_timeout = float(self.ttl)
        self.terms = 0  # how many times work was started

    async def run(self) -> Any:
        while True:
            try:
                leadership = await self.election.campaign(self.value, ttl=self.ttl)
            except ClosedError:
                return None  # the client closed: nothing to supervise any more
            except (ElectionError, EtcdUnavailable) as err:
                if not self.again:
                    raise
                await self._pause(f"campaign failed ({type(err).__name__}: {err})")
                continue
            outcome = await self._term(leadership)
            if outcome is Ended.CLOSED:
                return None
            if outcome is Ended.LOST:
                await self._pause(f"leadership was lost ({leadership.lost.reason})")
                continue
            if not self.again:
                if outcome.cancelled():
                    log.warning("work for %s was cancelled by other code", _name(leadership))
                    return None
                return outcome.result()
            if outcome.cancelled() or outcome.exception() is not None:
                await self._pause("work ended early")
            else:
                self.backoff.reset()

    async def _pause(self, why: str) -> None:
        delay = self.backoff.next_delay()
        log.warning("campaigning again in %.2fs: %s", delay, why)
        await asyncio.sleep(delay)

    async def _term(self, leadership: Leadership) -> asyncio.Task[Any] | Ended:
        """One term: returns the finished work task, or how the term ended without one."""
        name = _name(leadership)
        task: asyncio.Task[Any] | None = None
        finished: asyncio.Task[Any] | None = None
        try:
            await self._call(self.on_elected, leadership)
            if not leadership.is_leader:  # lost while on_elected ran: never start the work
                log.warning("leadership of %s ended before the work started", name)
                return Ended.LOST if leadership.lost.reason is not None else Ended.CLOSED
            self.terms += 1
            task = asyncio.get_running_loop().create_task(
                _run_work(self.work, leadership), name=f"geeh-work-{name}"
            )
            lost = asyncio.ensure_future(leadership.lost.wait())
            try:
                # wait() never cancels what it waits for; our own cancellation raises here.
                await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
            if not task.done():
                return Ended.LOST if leadership.lost.reason is not None else Ended.CLOSED
            if task.cancelled():
                log.warning("work for %s ended cancelled by other code; resigning", name)
            elif task.exception() is not None and self.again:
                log.error("work for %s raised; resigning", name, exc_info=task.exception())
            finished = task
            return task
        finally:
            cancelled = False
            if task is not None and task is not finished:  # else: its outcome is reported
                cancelled = await self._stop(task, leadership)
            try:
                await _resign(leadership)
            finally:
                await self._call(self.on_lost, leadership, leadership.lost.reason)
            if cancelled:  # cancelled while waiting for the work: honour it now
                raise asyncio.CancelledError()

    async def _stop(self, task: asyncio.Task[Any], leadership: Leadership) -> bool:
        grace = self.grace if self.grace is not None else safety_margin(leadership.session.ttl)
        return await stop_work(task, _name(leadership), grace)

    async def _call(self, callback: Callable[..., object] | None, *args: Any) -> None:
        """Run a user's callback; one that raises is logged and changes nothing.

        An async one is awaited at most ``callback_timeout`` seconds, then cancelled.
        """
        if callback is None:
            return
        try:
            result = callback(*args)
        except (Exception, asyncio.CancelledError):  # its own CancelledError: sync code
            log.exception("callback %r raised", callback)
            return
        if not inspect.isawaitable(result):
            return
        future = asyncio.ensure_future(result)
        done, cancelled = await _wait(future, self.callback_timeout, give_up_on_cancel=True)
        if not done:
            if not cancelled:
                log.error(
                    "callback %r still runs after %gs: cancelled", callback, self.callback_timeout
                )
            future.cancel()
            await _wait(future, self.callback_timeout)
        if future.done() and not future.cancelled() and future.exception() is not None:
            log.error("callback %r raised", callback, exc_info=future.exception())
        elif not future.done():
            log.error("callback %r ignores cancellation; left running", callback)
            future.add_done_callback(_retrieve)
        if cancelled:
            raise asyncio.CancelledError()


async def stop_work(task: asyncio.Task[Any], name: str, grace: float) -> bool:
    """Cancel work and wait until it has finished, warning once its grace is over.

    A cancellation of the waiting task meanwhile does not end the wait: it is returned
    (True), for the caller to raise once the term is over.
    """
    task.cancel()  # no-op if it ended as we were cancelled
    done, cancelled = await _wait(task, grace)
    if not done:
        log.error(
            "work for %s still runs %.2fs after leadership ended; it must stop on "
            "cancellation: waiting for it",
            name,
            grace,
        )
        cancelled = (await _wait(task, None))[1] or cancelled
    if not task.cancelled() and task.exception() is not None:
        log.error("work for %s raised while stopping", name, exc_info=task.exception())
    return cancelled


async def _wait(
    future: asyncio.Future[Any], timeout: float | None, *, give_up_on_cancel: bool = False
) -> tuple[bool, bool]:
    """Wait for ``future`` up to ``timeout``, absorbing cancellations of the waiting task.

    Returns (done, cancelled): whether it finished, and whether we were cancelled meanwhile
    (with ``give_up_on_cancel``, a cancellation ends the wait at once).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    cancelled = False
    while not future.done():
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            break
        try:
            await asyncio.wait({future}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True
            if give_up_on_cancel:
                break
    return future.done(), cancelled


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("an abandoned callback raised", exc_info=future.exception())


def _name(leadership: Leadership) -> str:
    return show(leadership.name)


async def _run_work(work: Work, leadership: Leadership) -> Any:
    if not leadership.is_leader:  # lost since the check, before this first step: never start
        await asyncio.get_running_loop().create_future()  # until the supervisor cancels it
    return await work(leadership)


async def _resign(leadership: Leadership) -> None:
    if leadership.is_leader:
        try:
            await leadership.resign()
        except Exception as err:  # it expires by itself: the loss path covers it
            log.warning("resign of %s failed: %s", show(leadership.name), err)

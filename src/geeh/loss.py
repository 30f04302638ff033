"""LossSignal: how gee-h tells you that something you held has ended, and why."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

log = logging.getLogger("geeh")

# Per thread: the signals it is polling now. A poll may set its own signal, which must not
# poll again on that thread; another thread's read must not be turned away meanwhile.
_polling = threading.local()


class LossSignal:
    """Set once, with the reason, when a session or a leadership ends.

    Await it (``await leadership.lost``) or call :meth:`wait` to block until it is set;
    :meth:`is_set` and :attr:`reason` tell without waiting. The reason is an exception
    instance (such as :class:`~geeh.SessionExpired`), or None after a deliberate end.

    Reading it is exact at any moment: a local deadline that has passed sets it as soon as
    anyone looks (``poll``), not one event-loop step later, so that ``is_leader``, ``lost``
    and the reason always agree. :meth:`is_set` may be read from any thread: off the event
    loop's thread a passed deadline reads as set at once, and the loop sets the signal (and
    its :attr:`reason`) on its next step. Everything else belongs to the loop's thread.
    """

    def __init__(self, poll: Callable[[], bool] | None = None) -> None:
        # Not an asyncio.Event: its deque costs 0.7 KiB per leadership, and a client may hold
        # thousands; waiters are rare, so a list of futures made on demand is enough.
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []
        self._reason: BaseException | None = None
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        # poll() says whether a deadline has ended it; on the loop's thread it also sets it.
        self._poll = poll

    def _check(self) -> bool:
        if self._set:
            return True
        if self._poll is None:
            return False
        mine: set[int] = _polling.__dict__.setdefault("signals", set())
        if id(self) in mine:
            return False
        mine.add(id(self))
        try:
            ended = self._poll()
        finally:
            mine.discard(id(self))
        return ended or self._set

    def is_set(self) -> bool:
        """True once the thing it guards has ended (from any thread: see the class)."""
        return self._check()

    @property
    def reason(self) -> BaseException | None:
        """Why it ended: an exception, or None if it was ended on purpose (resign, close)."""
        self._check()
        return self._reason

    async def wait(self) -> BaseException | None:
        """Wait until set; returns :attr:`reason`."""
        self._check()
        if not self._set:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._reason

    def __await__(self) -> Generator[Any, None, BaseException | None]:
        return self.wait().__await__()

    def set(self, reason: BaseException | None) -> bool:
        """Set the signal; returns False if it was already set (the first reason stays).

        A deadline that has already passed counts as earlier than this call: its reason wins.
        """
        self._check()
        if self._set:
            return False
        self._reason = reason
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run(callback, reason)
        return True

    def add_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(reason)`` when set (at once if already set).

        A callback that raises is logged; it changes nothing else, and the others still run.
        """
        if self.is_set():
            _run(callback, self._reason)
        else:
            self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Forget a callback added with ``add_callback`` (no error if it is not there)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def __repr__(self) -> str:
        state = f"set reason={self._reason!r}" if self._set else "unset"
        return f"<LossSignal {state}>"


def _run(callback: Callable[[BaseException | None], None], reason: BaseException | None) -> None:
    try:
        callback(reason)
    except Exception:
        log.exception("a loss callback (%r) raised; ignored", callback)

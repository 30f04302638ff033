"""LossSignal: how gee-h tells you that something you held has ended, and why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any


class LossSignal:
    """Set once, with the reason, when a session or a leadership ends.

    Await it (``await leadership.lost``) or call :meth:`wait` to block until it is set;
    :meth:`is_set` and :attr:`reason` tell without waiting. The reason is an exception
    instance (such as :class:`~geeh.SessionExpired`), or None after a deliberate end.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reason: BaseException | None = None
        self._callbacks: list[Callable[[BaseException | None], None]] = []

    def is_set(self) -> bool:
        """True once the thing it guards has ended."""
        return self._event.is_set()

    @property
    def reason(self) -> BaseException | None:
        """Why it ended: an exception, or None if it was ended on purpose (resign, close)."""
        return self._reason

    async def wait(self) -> BaseException | None:
        """Wait until set; returns :attr:`reason`."""
        await self._event.wait()
        return self._reason

    def __await__(self) -> Generator[Any, None, BaseException | None]:
        return self.wait().__await__()

    def set(self, reason: BaseException | None) -> bool:
        """Set the signal; returns False if it was already set (the first reason stays)."""
        if self._event.is_set():
            return False
        self._reason = reason
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reason)
        return True

    def add_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(reason)`` when set (at once if already set). Internal chaining."""
        if self._event.is_set():
            callback(self._reason)
        else:
            self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def __repr__(self) -> str:
        state = f"set reason={self._reason!r}" if self.is_set() else "unset"
        return f"<LossSignal {state}>"

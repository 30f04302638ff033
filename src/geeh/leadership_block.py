"""The leadership block: ``async with leadership:`` cancelled by a loss, as asyncio.timeout.

A :class:`~geeh.Leadership` used as an async context manager records the task running the
block; a loss cancels that task, and on exit the cancellation is withdrawn and turned into
:class:`~geeh.LeadershipLost`, unless the caller cancelled the task too.
"""

from __future__ import annotations

import asyncio


class Block:
    """The task running a leadership block, and our cancellation of it (as asyncio.timeout).

    Our cancel request is counted by the task; on exit it is withdrawn with ``uncancel()``.
    If no other request is left, a CancelledError is ours and becomes LeadershipLost; if
    another is left (the caller's own), the cancellation propagates unchanged.
    """

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.cancelled = False

    def interrupt(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.task.cancel(msg="leadership lost")

    async def exit(self, exc_type: type[BaseException] | None) -> bool:
        """Withdraw our cancellation; True if the block must end with LeadershipLost."""
        if not self.cancelled:
            return False
        if self.task.uncancel() > self.cancelling:
            return False  # cancelled from outside too: that goes on
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            return True
        # The block ended before our cancellation reached it, which may still be pending (an
        # uncancelled task keeps it before Python 3.13): take it here, not at the next await.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.task.cancelling() > self.cancelling:
                raise
        return exc_type is None

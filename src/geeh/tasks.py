"""Background tasks: each has an owner that sees its failure, and close() awaits them all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("geeh")


async def stop(task: asyncio.Future[Any], what: str | None = None) -> None:
    """Cancel ``task`` and wait until it has finished; log its failure, if it had one.

    Unlike ``task.cancel(); with suppress(CancelledError): await task``, a cancellation of
    the caller while it waits is not swallowed: it propagates, as it must.
    """
    task.cancel()
    await asyncio.wait({task})
    failed(task, what)


def failed(task: asyncio.Future[Any], what: str | None = None) -> bool:
    """Log (and retrieve) the exception ``task`` ended with; True if there was one."""
    if not task.done() or task.cancelled() or task.exception() is None:
        return False
    name = what or (task.get_name() if isinstance(task, asyncio.Task) else repr(task))
    log.error("background task %s failed", name, exc_info=task.exception())
    return True


class Tasks:
    """Owns background tasks: sees each failure when it happens, cancels and awaits on close."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; a failure is logged; close() waits for it."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        failed(task)

    async def finish(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run clean-up work to completion even if the caller is cancelled meanwhile.

        The caller waits for it (its failure is logged, not raised); if the caller is
        cancelled, the work goes on in the background and close() waits for it.
        """
        task = self.spawn(coro, name=name)
        await asyncio.wait({task})

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for clean-up tasks, then cancel what is left and await it.

        Tasks spawned meanwhile (clean-up started by other clean-up) are waited for too.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=remaining)
        while self._tasks:
            pending = set(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

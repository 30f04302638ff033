"""The core that elections, sessions and observers are given, instead of the whole Client.

It holds what they share: the transport (unary calls with failover), the watch hub, the
lessor (the keepalive stream), the owner of background tasks, and the registries of what must
be closed with the client. It knows nothing of the objects above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

from .errors import ClosedError
from .listeners import Events
from .net.failover import Transport
from .session import Lessor
from .watch import WatchHub

log = logging.getLogger("geeh")


class Closable(Protocol):
    async def aclose(self) -> None: ...


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
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def finish(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run clean-up work to completion even if the caller is cancelled meanwhile.

        The caller waits for it (its failure is logged, not raised); if the caller is
        cancelled, the work goes on in the background and close() waits for it.
        """
        task = self.spawn(coro, name=name)
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for clean-up tasks, then cancel what is left and await it."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


class Core:
    """What the election objects share; built and closed by :class:`geeh.Client`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.watches = WatchHub(transport)
        self.lessor = Lessor(transport)
        self.tasks = Tasks()
        # Closed in this order by close(): leaderships resign before their sessions revoke.
        self.leaderships: set[Closable] = set()
        self.sessions: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.observations: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.closed = False

    @property
    def events(self) -> Events:
        """The listeners' dispatcher: one call per event (see listeners.py)."""
        return self.transport.events

    def check_open(self) -> None:
        if self.closed:
            raise ClosedError("the client is closed")

    async def close(self, timeout: float = 5.0) -> None:
        """Resign, revoke and stop everything, in order. Idempotent."""
        self.closed = True
        for group in (self.leaderships, self.sessions, self.observations):
            for thing in list(group):
                await thing.aclose()
        self.leaderships.clear()
        await self.tasks.close(timeout)
        await self.watches.close()
        await self.lessor.close()
        await self.transport.close()

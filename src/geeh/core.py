"""The core that elections, sessions and observers are given, instead of the whole Client.

It holds what they share: the transport (unary calls with failover), the watch hub, the
lessor (the keepalive stream), the owner of background tasks, and the registries of what must
be closed with the client. It knows nothing of the objects above it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import Protocol

from . import fork
from .errors import ClosedError
from .events import Events
from .lessor import Lessor
from .net.failover import Transport
from .tasks import Tasks
from .watch import WatchHub

__all__ = ["Closable", "Core", "Tasks"]

log = logging.getLogger("geeh")


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Core:
    """What the election objects share; built and closed by :class:`geeh.Client`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.watches = WatchHub(transport)
        self.lessor = Lessor(transport)
        self.tasks = Tasks()
        # Closed in this order by close(): leaderships resign before their sessions revoke.
        # A leadership leaves the set when it ends (resign or loss), a session when closed.
        self.leaderships: set[Closable] = set()
        self.sessions: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.observations: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.closed = False
        self._closing: asyncio.Task[None] | None = None

    @property
    def events(self) -> Events:
        """The listeners' dispatcher: one call per event (see listeners.py)."""
        return self.transport.events

    def check_open(self) -> None:
        fork.check(self.transport.pid, "this gee-h client")
        if self.closed:
            raise ClosedError("the client is closed")

    def sizes(self) -> dict[str, int]:
        """How many things each internal table holds (for tests and leak hunting)."""
        return {
            "leaderships": len(self.leaderships),
            "sessions": len(self.sessions),
            "observations": len(self.observations),
            "tasks": len(self.tasks),
            "watches": self.watches.active,
            "keepalive waiters": self.lessor.waiting,
        }

    async def close(self, timeout: float = 5.0) -> None:
        """Resign, revoke and stop everything, in order. Idempotent.

        The work runs in a task of its own: a caller cancelled meanwhile does not leave the
        client half-closed, and a second call waits for the same work to end.
        """
        self.closed = True
        if fork.forked(self.transport.pid):
            # In a forked child, resigning or revoking would go through the parent's
            # channels: drop everything instead (the parent's leases are its own).
            await self.transport.close()
            return
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._close(timeout), name="geeh-close"
            )
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float) -> None:
        # Each step is isolated: one that fails is logged, and the others still run, so the
        # hub, the keepalive stream and the channels are closed whatever happened before.
        for group in (self.leaderships, self.sessions, self.observations):
            for thing in list(group):
                await _step(thing.aclose(), f"closing {thing!r}")
        self.leaderships.clear()
        await _step(self.tasks.close(timeout), "waiting for background tasks")
        await _step(self.watches.close(), "closing the watch stream")
        await _step(self.lessor.close(), "closing the keepalive stream")
        await _step(self.transport.close(), "closing the channels")


async def _step(work: Awaitable[None], what: str) -> None:
    try:
        await work
    except Exception:
        log.exception("client close: %s failed; going on", what)

"""Scripted fakes of the layer below sessions and leaderships, for deterministic tests.

They come in addition to the real-etcd tests: they force orderings that a real server
cannot be made to produce on demand (a deadline passing between two lines of code, a
keepalive answered at a chosen moment, a revoke that fails exactly N times).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable
from typing import Any

from geeh._proto import rpc_pb2
from geeh.core import Core
from geeh.leadership import Leadership
from geeh.listeners import Events
from geeh.net.retry import LEASE_GRANT, LEASE_REVOKE, TXN
from geeh.session import Session

Handler = Callable[[Any], Any]


class FakeTransport:
    """Unary calls answered by a handler per method path; every call is recorded."""

    request_timeout = 1.0
    attempt_timeout = 0.5
    endpoint = "fake:2379"

    def __init__(self) -> None:
        self.pid = os.getpid()  # the process it was made in (see geeh.fork)
        self.calls: list[tuple[str, Any]] = []
        self.handlers: dict[str, Handler] = {
            LEASE_GRANT.path: lambda r: rpc_pb2.LeaseGrantResponse(ID=0x1234, TTL=r.TTL),
            LEASE_REVOKE.path: lambda r: rpc_pb2.LeaseRevokeResponse(),
            TXN.path: lambda r: rpc_pb2.TxnResponse(succeeded=True),
        }
        self.covered: dict[str, float] = {}
        self.heard: dict[str, float] = {}
        self.closed = False
        self.events = Events()

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.calls if p == path)

    async def call(self, method: Any, request: Any, **options: Any) -> Any:
        self.calls.append((method.path, request))
        result = self.handlers[method.path](request)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, BaseException):
            raise result
        return result

    def fail(self, endpoint: str, reason: object) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FakeLessor:
    """Keepalives that wait until the test answers them (or forever)."""

    def __init__(self) -> None:
        self.sent = 0
        self.cancelled = 0
        self.pending: list[asyncio.Future[int]] = []
        self.waiting = 0
        self.slow_cancel: asyncio.Event | None = None  # if set: a cancel waits for it

    async def keepalive(self, lease: int, timeout: float, next_in: float = 0.0) -> int:
        self.sent += 1
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(reply)
        try:
            return await reply
        except asyncio.CancelledError:
            self.cancelled += 1
            if self.slow_cancel is not None:
                await self.slow_cancel.wait()
            raise
        finally:
            self.pending.remove(reply)

    def answer(self, ttl: int) -> None:
        for reply in list(self.pending):
            if not reply.done():
                reply.set_result(ttl)

    async def close(self) -> None:
        pass


def fake_core() -> tuple[Core, FakeTransport, FakeLessor]:
    transport = FakeTransport()
    core = Core(transport)  # type: ignore[arg-type]
    lessor = FakeLessor()
    core.lessor = lessor  # type: ignore[assignment]
    return core, transport, lessor


async def fake_session(core: Core, ttl: int = 30) -> Session:
    session = await Session.grant(core, ttl)
    core.sessions.add(session)
    return session


def fake_leadership(
    core: Core,
    session: Session,
    *,
    owns_session: bool = True,
    watcher: asyncio.Future[Any] | None = None,
    gone: asyncio.Future[BaseException] | None = None,
) -> Leadership:
    """A leadership as a won campaign makes it; its key watcher runs until cancelled.

    ``gone`` stands for what the key watcher resolves when our key is deleted.
    """
    if gone is None:
        gone = asyncio.get_running_loop().create_future()
    if watcher is None:
        watcher = asyncio.ensure_future(asyncio.Event().wait())
    return Leadership(
        core,
        b"fake",
        session,
        owns_session,
        f"fake/{session.lease:x}".encode(),
        b"value",
        5,
        gone,
        watcher,  # type: ignore[arg-type]
        detach=lambda: None,
    )

"""Client: the connection to an etcd cluster, and the owner of everything that runs on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Coroutine, Sequence
from typing import Any

from ._proto import rpc_pb2 as rpc
from .election import Election
from .errors import ClosedError, EtcdUnavailable, InvalidArgument
from .failover import COMPACT, RANGE, STATUS, Transport, parse_endpoints
from .session import Lessor, Session, check_ttl
from .watch import WatchHub

log = logging.getLogger("geeh")


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgument(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class Client:
    """An asyncio client for leader election on an etcd v3 cluster.

    ::

        async with geeh.Client(["10.0.0.1:2379", "10.0.0.2:2379"]) as client:
            election = client.election("my-election")
            async with election.campaign(b"my-value", ttl=5) as leadership:
                ...

    ``endpoints`` is one "host:port" string (comma-separated allowed) or a sequence of them;
    with ``discover`` (the default) the other members are learnt from the cluster. Entering
    the client checks that etcd answers within ``dial_timeout``; every request then gets up
    to ``request_timeout`` seconds over all members, each attempt ``attempt_timeout``.
    ``close()`` resigns every leadership, revokes every session's lease and stops every
    task and stream the client started; closing twice is harmless.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        dial_timeout: float = 5.0,
        request_timeout: float = 10.0,
        attempt_timeout: float = 2.0,
        discover: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.dial_timeout = _positive(dial_timeout, "dial_timeout")
        request_timeout = _positive(request_timeout, "request_timeout")
        attempt_timeout = _positive(attempt_timeout, "attempt_timeout")
        if (username is None) != (password is None):
            raise InvalidArgument("give both username and password, or neither")
        self._discover = discover
        self._transport = Transport(
            self.endpoints, request_timeout=request_timeout, attempt_timeout=attempt_timeout
        )
        if username is not None and password is not None:
            self._transport.credentials = (username, password)
        self._watches = WatchHub(self._transport)
        self._lessor = Lessor(self._transport)
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._leaderships: set[Any] = set()
        self._observations: weakref.WeakSet[Any] = weakref.WeakSet()
        self._background: set[asyncio.Task[Any]] = set()
        self._connected = False
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Check that etcd answers (within ``dial_timeout``) and learn the cluster's members."""
        self._check_open()
        if self._connected:
            return
        try:
            if self._transport.credentials is not None:
                await self._transport.authenticate()
            if self._discover:
                await self._transport.discover(timeout=self.dial_timeout)
            else:
                await self._transport.call(STATUS, rpc.StatusRequest(), timeout=self.dial_timeout)
        except EtcdUnavailable as err:
            raise EtcdUnavailable(
                f"cannot reach etcd at {', '.join(self.endpoints)} within "
                f"{self.dial_timeout:g}s (is it running?)",
                code=err.code,
            ) from None
        self._connected = True

    async def __aenter__(self) -> Client:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Resign, revoke, stop everything this client started. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for leadership in list(self._leaderships):
            await leadership._close()
        self._leaderships.clear()
        for session in list(self._sessions):
            await session.close()
        for observation in list(self._observations):
            await observation.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._watches.close()
        await self._lessor.close()
        await self._transport.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the client is closed")

    # -- what users make with it ---------------------------------------------------------------

    def election(self, name: str | bytes) -> Election:
        """The election called ``name`` (str or bytes, not empty)."""
        self._check_open()
        return Election(self, name)

    async def session(self, ttl: int = 10, *, lease: int | None = None) -> Session:
        """A new session: a lease of ``ttl`` seconds kept alive until closed.

        With ``lease``, resume that existing lease instead of granting one.
        """
        self._check_open()
        if lease is not None:
            session = await Session.resume(self._transport, self._lessor, lease)
        else:
            session = await Session.grant(self._transport, self._lessor, check_ttl(ttl))
        self._sessions.add(session)
        return session

    async def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one). For tests/ops."""
        if revision is None:
            response = await self._transport.call(
                RANGE, rpc.RangeRequest(key=b"\x00", count_only=True)
            )
            revision = response.header.revision
        await self._transport.call(COMPACT, rpc.CompactionRequest(revision=revision, physical=True))
        return revision

    # -- bookkeeping for the objects it owns -----------------------------------------------------

    def _remember(self, leadership: Any) -> None:
        self._leaderships.add(leadership)

    def _forget(self, leadership: Any) -> None:
        self._leaderships.discard(leadership)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run clean-up work in the background; close() waits for it."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cleanup(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run clean-up work to completion even if the caller is being cancelled."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._transport.endpoint
        return f"<geeh.Client {state}>"

"""Sessions: a lease kept alive every TTL/3, and the local deadline that bounds our trust in it.

A session knows when it was last confirmed: the send time of the last keepalive that etcd
answered. etcd cannot expire the lease before that time plus the TTL, so until then (less a
safety margin) the session is certainly alive, whatever the network does. When the deadline
passes without a newer answer, the session declares itself expired before etcd can hand
leadership to anyone else. A keepalive answered with TTL <= 0 means the lease is gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from ._proto import rpc_pb2 as rpc
from .errors import ClosedError, EtcdError, InvalidArgument, SessionExpired
from .loss import LossSignal
from .net.failover import Transport
from .net.retry import KEEPALIVE_PATH, LEASE_GRANT, LEASE_REVOKE, LEASE_TTL, Backoff
from .net.stream import ResumableStream

log = logging.getLogger("geeh.session")

MIN_TTL = 1


def safety_margin(ttl: float) -> float:
    """How long before the lease could expire on etcd we stop trusting it: 10%, 0.1-1 s."""
    return min(1.0, max(0.1, ttl * 0.1))


def check_ttl(ttl: object) -> int:
    """Validate a TTL in seconds (int, or a float with no fraction)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidArgument(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if ttl != ttl or ttl < MIN_TTL:
        raise InvalidArgument(f"ttl must be at least {MIN_TTL} second, got {ttl!r}")
    if ttl != int(ttl):
        raise InvalidArgument(f"ttl must be a whole number of seconds (etcd's unit), got {ttl!r}")
    return int(ttl)


class Lessor(ResumableStream[rpc.LeaseKeepAliveRequest, rpc.LeaseKeepAliveResponse]):
    """Owns the client's LeaseKeepAlive stream, shared by every session of the client."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(
            transport,
            KEEPALIVE_PATH,
            rpc.LeaseKeepAliveRequest,
            rpc.LeaseKeepAliveResponse,
            "keepalive",
        )
        self._waiters: dict[int, collections.deque[asyncio.Future[int]]] = {}

    async def keepalive(self, lease: int, timeout: float, next_in: float = 0.0) -> int:
        """Send one keepalive for ``lease``; return the TTL etcd answered.

        Raises ConnectionError if the stream broke or no answer came within ``timeout``; in the
        latter case the member is reported as failed so the next attempt goes elsewhere.
        ``next_in``: when the next keepalive will go; the member counts as checked until that
        one's answer is due.
        """
        await self.wait_open()
        endpoint = self._transport.endpoint
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease, collections.deque()).append(reply)
        self.send(rpc.LeaseKeepAliveRequest(ID=lease))
        try:
            ttl = await asyncio.wait_for(reply, timeout)
            covered = self._transport.covered
            until = time.monotonic() + next_in + timeout
            if until > covered.get(endpoint, 0.0):
                covered[endpoint] = until
            return ttl
        except TimeoutError:
            self._transport.fail(endpoint, f"no keepalive answer within {timeout:.1f}s")
            raise ConnectionError(f"no keepalive answer from {endpoint}") from None
        finally:
            queue = self._waiters.get(lease)
            if queue is not None and reply in queue:
                queue.remove(reply)
                if not queue:
                    del self._waiters[lease]

    def received(self, response: rpc.LeaseKeepAliveResponse) -> None:
        queue = self._waiters.get(response.ID)
        if queue:
            reply = queue.popleft()
            if not reply.done():
                reply.set_result(response.TTL)

    def stream_ended(self) -> None:
        self._fail_waiters(ConnectionError("keepalive stream restarted"))

    def _fail_waiters(self, err: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for queue in waiters.values():
            for reply in queue:
                if not reply.done():
                    reply.set_exception(err)

    async def close(self) -> None:
        if not self._closed:
            self._fail_waiters(ClosedError("the client is closed"))
        await super().close()


class Session:
    """A lease and the task that keeps it alive.

    Create one with ``await client.session(ttl)`` (or ``async with await
    client.session(ttl)``); a campaign makes its own when given none. ``expired`` is set,
    with a :class:`~geeh.SessionExpired` reason, when the lease is lost; ``close()`` revokes
    it.
    """

    def __init__(
        self, transport: Transport, lessor: Lessor, lease: int, ttl: int, confirmed_at: float
    ) -> None:
        self._transport = transport
        self._lessor = lessor
        self.lease = lease
        self.ttl = ttl
        self.expired = LossSignal()
        self.deadline = confirmed_at + ttl - safety_margin(ttl)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- creation --------------------------------------------------------------------------

    @classmethod
    async def grant(cls, transport: Transport, lessor: Lessor, ttl: int) -> Session:
        """Grant a new lease of ``ttl`` seconds (etcd may grant more) and keep it alive."""
        sent = time.monotonic()
        response = await transport.call(
            LEASE_GRANT, rpc.LeaseGrantRequest(TTL=ttl), what="grant lease"
        )
        if response.error:
            raise EtcdError(f"grant lease: {response.error}")
        session = cls(transport, lessor, response.ID, response.TTL, sent)
        session._start()
        return session

    @classmethod
    async def resume(cls, transport: Transport, lessor: Lessor, lease: int) -> Session:
        """Keep alive an existing lease (after a restart): no new grant, same candidate key."""
        if isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0:
            raise InvalidArgument(f"lease must be a positive int lease ID, got {lease!r}")
        sent = time.monotonic()
        response = await transport.call(
            LEASE_TTL, rpc.LeaseTimeToLiveRequest(ID=lease), what="resume lease"
        )
        if response.TTL <= 0:
            raise SessionExpired(f"lease {lease:x} does not exist (expired or revoked)")
        session = cls(transport, lessor, lease, response.grantedTTL, sent)
        session.deadline = sent + response.TTL - safety_margin(response.grantedTTL)
        session._start()
        return session

    def _start(self) -> None:
        self._arm_timer()
        self._task = asyncio.get_running_loop().create_task(
            self._keepalive(), name=f"geeh-keepalive-{self.lease:x}"
        )

    # -- keeping it alive --------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return self.ttl / 3

    @property
    def reply_timeout(self) -> float:
        return min(2.0, max(0.5, self.ttl / 5))

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        # loop.time() and time.monotonic() are the same clock in asyncio's default loop.
        self._timer = loop.call_at(self.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._expire(
            SessionExpired(
                f"lease {self.lease:x}: no keepalive answered in time; "
                "it may expire on etcd any moment, so it is treated as lost"
            )
        )

    def _expire(self, reason: SessionExpired) -> None:
        if self.expired.set(reason):
            log.warning("session %x expired: %s", self.lease, reason)
            if self._timer is not None:
                self._timer.cancel()
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()

    async def _keepalive(self) -> None:
        backoff = Backoff(base=0.02, cap=0.5)
        while not self.expired.is_set():
            sent = time.monotonic()
            try:
                ttl = await self._lessor.keepalive(self.lease, self.reply_timeout, self.interval)
            except ClosedError:
                return
            except ConnectionError as err:
                log.debug("keepalive %x: %s", self.lease, err)
                self._transport.events.keepalive_failed(self.lease, err)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            if ttl <= 0:
                self._expire(SessionExpired(f"lease {self.lease:x} expired or was revoked"))
                return
            deadline = sent + ttl - safety_margin(self.ttl)
            if deadline > self.deadline:
                self.deadline = deadline
                self._arm_timer()
            await asyncio.sleep(self.interval)

    @property
    def alive(self) -> bool:
        """True while the lease is known alive: not expired, not closed, deadline ahead."""
        return not self.expired.is_set() and time.monotonic() < self.deadline

    def check(self) -> None:
        """Raise the expiry reason if the session has ended."""
        if self.expired.is_set():
            reason = self.expired.reason
            raise reason if reason is not None else SessionExpired("the session was closed")
        if time.monotonic() >= self.deadline:
            self._deadline_passed()
            self.check()

    async def revoke(self, *, timeout: float | None = None) -> None:
        """Revoke the lease now, deleting every key attached to it.

        Raises EtcdError if etcd cannot be reached in time (the session is left as it was,
        so a retry finishes the job); a lease that is already gone counts as revoked.
        """
        try:
            await self._transport.call(
                LEASE_REVOKE,
                rpc.LeaseRevokeRequest(ID=self.lease),
                timeout=timeout,
                what="revoke lease",
            )
        except EtcdError as err:
            if err.code != "NOT_FOUND":
                raise

    async def close(self, *, revoke: bool = True) -> None:
        """Stop the keepalives and revoke the lease (bounded, best effort). Idempotent."""
        if self._closed:
            return
        self._closed = True
        was_alive = not self.expired.is_set()
        self.expired.set(None)
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if revoke and was_alive:
            with contextlib.suppress(EtcdError, ClosedError):
                await self.revoke(timeout=min(self._transport.request_timeout, 2.0))

    async def aclose(self) -> None:
        """Close, revoking the lease (what the client does with its sessions on close)."""
        await self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Session lease={self.lease:x} ttl={self.ttl} alive={self.alive}>"

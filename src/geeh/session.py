"""Sessions: a lease kept alive every TTL/3, and the local deadline that bounds our trust in it.

A session knows when it was last confirmed: the send time of the last keepalive that etcd
answered. etcd cannot expire the lease before that time plus the TTL, so until then (less a
safety margin) the session is certainly alive, whatever the network does. When the deadline
passes without a newer answer, the session declares itself expired before etcd can hand
leadership to anyone else. A keepalive answered with TTL <= 0 means the lease is gone.

The deadline is kept on CLOCK_BOOTTIME where the platform has it: CLOCK_MONOTONIC stops while
the machine is suspended, and etcd's clock does not.

A session that ends (closed, or expired by its deadline while etcd may still hold the lease)
revokes its lease in the background, retrying until etcd answers, so that the keys on it do
not linger for a TTL after a link heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._proto import rpc_pb2 as rpc
from .errors import ClosedError, EtcdError, EtcdUnavailable, InvalidArgument, SessionExpired
from .loss import LossSignal
from .net.retry import IF_UNSENT, LEASE_GRANT, LEASE_REVOKE, LEASE_TTL, Backoff, Retry
from .tasks import stop

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("geeh.session")

MIN_TTL = 1
# The deadline timer runs on the event loop's clock, which stops during a suspend: it wakes
# at least this often to compare with the session's clock, so a loss is signalled (and a
# leadership block interrupted) within this long of a resume.
TIMER_STEP = 1.0

if hasattr(time, "CLOCK_BOOTTIME"):

    def now() -> float:
        """The sessions' clock: CLOCK_BOOTTIME, which keeps counting while suspended."""
        return time.clock_gettime(time.CLOCK_BOOTTIME)

else:  # pragma: no cover - not Linux

    def now() -> float:
        """The sessions' clock: monotonic (this platform has no CLOCK_BOOTTIME)."""
        return time.monotonic()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Pause:
    """Pauses between the rounds of a background clean-up: 0.5-1 s, growing to 2.5-5 s.

    Gentle on purpose: a cluster without quorum answers every request at once, and a
    clean-up must not add a retry storm to an outage; the lease expires by itself meanwhile.
    """

    def __init__(self, first: float = 1.0, cap: float = 5.0) -> None:
        self._delay = first
        self._cap = cap

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._cap, delay * 2)
        return delay / 2 + random.uniform(0, delay / 2)


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


class Session:
    """A lease and the task that keeps it alive.

    Create one with ``await client.session(ttl)`` (or ``async with client.session(ttl)``,
    which closes it on exit); a campaign makes its own when given none. ``expired`` is set,
    with a :class:`~geeh.SessionExpired` reason, when the lease is lost; ``close()`` revokes
    it.
    """

    def __init__(self, core: Core, lease: int, ttl: int, confirmed_at: float) -> None:
        self._core = core
        self.lease = lease
        self.ttl = ttl
        self.expired = LossSignal(poll=self._poll)
        self.deadline = confirmed_at + ttl - safety_margin(ttl)  # on the clock now()
        self._loop: asyncio.AbstractEventLoop | None = None  # set once started: the owner
        self._expiry_asked = False  # another thread saw the deadline pass: the loop expires
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._release: asyncio.Task[None] | None = None
        self._gone = False  # etcd said the lease no longer exists
        self._closed = False

    # -- creation --------------------------------------------------------------------------

    @classmethod
    async def grant(cls, core: Core, ttl: int) -> Session:
        """Grant a new lease of ``ttl`` seconds (etcd may grant more) and keep it alive."""
        sent = now()
        response = await core.transport.call(
            LEASE_GRANT, rpc.LeaseGrantRequest(TTL=ttl), what="grant lease"
        )
        if response.error:
            raise EtcdError(f"grant lease: {response.error}")
        session = cls(core, response.ID, response.TTL, sent)
        session._start()
        return session

    @classmethod
    async def resume(cls, core: Core, lease: int) -> Session:
        """Keep alive an existing lease (after a restart): no new grant, same candidate key name."""
        if isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0:
            raise InvalidArgument(f"lease must be a positive int lease ID, got {lease!r}")
        sent = now()
        response = await core.transport.call(
            LEASE_TTL, rpc.LeaseTimeToLiveRequest(ID=lease), what="resume lease"
        )
        if response.TTL <= 0:
            raise SessionExpired(f"lease {lease:x} does not exist (expired or revoked)")
        session = cls(core, lease, response.grantedTTL, sent)
        session.deadline = sent + response.TTL - safety_margin(response.grantedTTL)
        session._start()
        return session

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm_timer()
        self._task = self._loop.create_task(
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
        # The loop's timers run on its own clock (monotonic): schedule by the difference.
        delay = min(max(0.0, self.deadline - now()), TIMER_STEP)
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.expired.is_set():  # polls the deadline: expires the session if it passed
            self._arm_timer()

    def _poll(self) -> bool:
        """Whether the deadline has passed; on the loop's thread, expire the session if so.

        Any thread may ask (a blocking caller's ``elected``): off the loop's thread this only
        reads the deadline and leaves the expiry, which touches the loop's objects, to it.
        """
        if now() < self.deadline:
            return False
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._expire(
                SessionExpired(
                    f"lease {self.lease:x}: no keepalive answered in time; "
                    "it may expire on etcd any moment, so it is treated as lost"
                )
            )
        elif not self._expiry_asked:
            self._expiry_asked = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs on it
                loop.call_soon_threadsafe(self.expired.is_set)
        return True

    def _expire(self, reason: SessionExpired, *, gone: bool = False) -> None:
        if self.expired.set(reason):
            log.info("session %x expired: %s", self.lease, reason)  # its leaderships say so
            self._gone = self._gone or gone
            self._stop_keepalive()
            # etcd may still hold the lease (keepalives delayed on the way renew it): nobody
            # will use it again, so revoke it rather than leave its keys for a whole TTL.
            self.release()

    def _stop_keepalive(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def _keepalive(self) -> None:
        backoff = Backoff(base=0.02, cap=0.5)
        while not self.expired.is_set():
            sent = now()
            try:
                ttl = await self._core.lessor.keepalive(
                    self.lease, self.reply_timeout, self.interval
                )
            except ClosedError:
                return
            except ConnectionError as err:
                log.debug("keepalive %x: %s", self.lease, err)
                self._core.transport.events.keepalive_failed(self.lease, err)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            if ttl <= 0:
                revoked = SessionExpired(f"lease {self.lease:x} expired or was revoked")
                self._expire(revoked, gone=True)
                return
            deadline = sent + ttl - safety_margin(self.ttl)
            if deadline > self.deadline and not self.expired.is_set():
                self.deadline = deadline
                self._arm_timer()
            await asyncio.sleep(self.interval)

    @property
    def alive(self) -> bool:
        """True while the lease is known alive: not expired, not closed, deadline ahead."""
        return not self.expired.is_set()

    def check(self) -> None:
        """Raise the expiry reason if the session has ended."""
        if self.expired.is_set():
            reason = self.expired.reason
            raise reason if reason is not None else SessionExpired("the session was closed")

    # -- ending it -----------------------------------------------------------------------------

    async def revoke(self, *, timeout: float | None = None) -> None:
        """Revoke the lease now, deleting every key attached to it.

        Raises EtcdError if etcd cannot be reached in time (the session is left as it was,
        so a retry finishes the job); a lease that is already gone counts as revoked.
        """
        await self._revoke(timeout, None)

    async def _revoke(self, timeout: float | None, retry: Retry | None) -> None:
        try:
            await self._core.transport.call(
                LEASE_REVOKE,
                rpc.LeaseRevokeRequest(ID=self.lease),
                timeout=timeout,
                retry=retry,
                what="revoke lease",
            )
        except EtcdError as err:
            if err.code != "NOT_FOUND":
                raise
        self._gone = True

    def release(self) -> None:
        """Revoke the lease in the background, retrying until etcd answers.

        The work is owned by the client (its close waits for it, within bounds); a lease
        that etcd says is gone counts as revoked.
        """
        if self._release is None and not self._gone:
            self._release = self._core.tasks.spawn(
                self._revoke_until_answered(), name=f"geeh-revoke-{self.lease:x}"
            )

    async def _revoke_until_answered(self) -> None:
        pause = Pause()
        while True:
            try:
                # One attempt per round (an answer such as "no leader" is not resent at once):
                # the pauses between rounds set the pace, not the transport's fast retries.
                await self._revoke(self._core.transport.attempt_timeout, IF_UNSENT)
                return
            except ClosedError:
                return
            except EtcdUnavailable as err:
                log.debug("revoke %x: %s; trying again", self.lease, err)
            except EtcdError as err:  # etcd answered: nothing a retry would change
                log.warning("could not revoke lease %x: %s", self.lease, err)
                return
            await asyncio.sleep(pause.next())

    async def close(self, *, revoke: bool = True) -> None:
        """Stop the keepalives and revoke the lease (bounded; then in the background).

        Idempotent. The revoke is retried in the background until etcd answers; close
        returns once it is done or the request timeout (2 s at most) has passed.
        """
        if not self._closed:
            self._closed = True
            self._core.sessions.discard(self)
            self.expired.set(None)  # a deadline already passed stays the reason
            self._stop_keepalive()
        if revoke:
            self.release()  # started before awaiting anything: a cancelled close still revokes
        if self._task is not None:
            await stop(self._task, f"keepalive {self.lease:x}")
        if revoke and self._release is not None:
            bound = min(self._core.transport.request_timeout, 2.0)
            await asyncio.wait({self._release}, timeout=bound)

    async def aclose(self) -> None:
        """Close, revoking the lease (what the client does with its sessions on close)."""
        await self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "alive" if self.alive else "ended"
        return f"<Session lease={self.lease:x} ttl={self.ttl} {state}>"


class NewSession:
    """What ``client.session(ttl)`` returns: await it, or use it as an async context manager.

    ``session = await client.session(5)`` keeps the session until you close it;
    ``async with client.session(5) as session:`` closes it (revoking the lease) on exit.
    """

    def __init__(self, core: Core, ttl: int, lease: int | None) -> None:
        self._core = core
        self._ttl = ttl
        self._lease = lease
        self._session: Session | None = None

    async def _open(self) -> Session:
        core = self._core
        core.check_open()
        if self._lease is not None:
            session = await Session.resume(core, self._lease)
        else:
            session = await Session.grant(core, self._ttl)
        core.sessions.add(session)
        return session

    def __await__(self) -> Generator[Any, None, Session]:
        return self._open().__await__()

    async def __aenter__(self) -> Session:
        self._session = await self._open()
        return self._session

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

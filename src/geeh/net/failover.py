"""Failover: which etcd member to talk to, when to leave it, and unary calls across members.

gee-h pins one endpoint at a time, as etcd's Go client did before it balanced per call: every
unary call and every stream goes to the pinned member. When a member fails (connection
refused, "no leader", a deadline passed, a stream went silent) the transport moves the pin to
the next endpoint, and every stream owner that was on the old member re-opens its stream on
the new one (see stream.py). Which request may be resent is decided in retry.py; waits
between rounds over all endpoints back off with full jitter, so a cluster without quorum
does not get a retry storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

from .. import fork
from .._proto import rpc_pb2 as rpc
from ..errors import ClosedError
from ..events import Events
from .auth import Authenticator
from .retry import (
    AUTHENTICATE,
    MEMBER_FAULTS,
    MEMBER_LIST,
    Backoff,
    Req,
    Resp,
    Retry,
    Unary,
    may_retry,
    outcome_unknown,
    translate,
    unavailable,
)
from .tls import LoadedTLS

log = logging.getLogger("geeh.failover")

# etcd's server keepalive policy: pings no more often than every 5 s, and only with an active
# stream; anything else earns a GOAWAY "too_many_pings". 10 s keeps well clear of it.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.use_local_subchannel_pool", 1),
]

# Without "hasleader", a request or a watch on a member cut off from the quorum just hangs.
REQUIRE_LEADER = ("hasleader", "true")

# A member that failed less than this long ago is passed over when the pin moves, as long as
# another member has not failed as recently: without it, two members failing in turn (a frozen
# one and one without a leader) would bounce the pin between them while a healthy third waits.
RECENT_FAILURE = 10.0


class Transport:
    """The connection to an etcd cluster: endpoints, the pinned member, retries.

    Owned by a :class:`geeh.Client`; everything else reaches etcd through it.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float,
        attempt_timeout: float,
        channel_options: Sequence[tuple[str, Any]] = (),
        auth: Authenticator | None = None,
        tls: LoadedTLS | None = None,
        events: Events | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.events = events if events is not None else Events()
        self.request_timeout = request_timeout
        self.attempt_timeout = attempt_timeout
        self.auth = auth
        self.tls = tls
        self._credentials = tls.credentials() if tls is not None else None
        tls_options = tls.channel_options() if tls is not None else []
        self._options = [*CHANNEL_OPTIONS, *tls_options, *channel_options]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._unary: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._pinned = 0
        self._generation = 0
        self._moved: asyncio.Future[None] | None = None
        self._failed_at: dict[str, float] = {}
        # When each member last answered anything: proof of life shared by all streams.
        self.heard: dict[str, float] = {}
        # Until when a member is checked anyway by requests with a timeout of their own
        # (a session's keepalives): the watch stream's probe is not needed before then.
        self.covered: dict[str, float] = {}
        self._closed = False
        self.pid = os.getpid()  # channels do not survive fork(): see fork.py
        self.request_count = 0  # every unary attempt and stream opened; for tests, benchmarks
        self.on_request: Callable[[str, str], None] | None = None

    # -- the pinned member ---------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The member currently pinned."""
        return self.endpoints[self._pinned]

    @property
    def generation(self) -> int:
        """Bumped each time the pin moves; stream owners compare it to notice a move."""
        return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        fork.check(self.pid, "this gee-h client")
        if self._closed:
            raise ClosedError("the client is closed")
        channel = self._channels.get(endpoint)
        if channel is None:
            fork.channel_opened()
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(endpoint, self._credentials, self._options)
            else:
                channel = grpc.aio.insecure_channel(endpoint, options=self._options)
            self._channels[endpoint] = channel
        return channel

    def fail(self, endpoint: str, reason: object) -> None:
        """Report that ``endpoint`` failed; if it is pinned, move to another member.

        The next member is the first one after it (round robin) that has not failed within
        RECENT_FAILURE seconds; if all have, the one whose last failure is the oldest.
        """
        now = time.monotonic()
        self._failed_at[endpoint] = now
        if endpoint != self.endpoint:
            return  # a stale report: the pin has moved on already
        if len(self.endpoints) == 1:
            self._bump()
            return
        n = len(self.endpoints)
        order = [(self._pinned + step) % n for step in range(1, n)]
        healthy = [i for i in order if not self._failed_recently(self.endpoints[i], now)]
        if healthy:
            self._pinned = healthy[0]
        else:
            # min() keeps the first in round-robin order among equals.
            self._pinned = min(order, key=lambda i: self._failed_at.get(self.endpoints[i], 0.0))
        log.info("leaving etcd member %s (%s); now using %s", endpoint, reason, self.endpoint)
        self.events.member_switched(endpoint, self.endpoint, reason)
        self._bump()

    def _failed_recently(self, endpoint: str, now: float) -> bool:
        failed = self._failed_at.get(endpoint)
        return failed is not None and now - failed < RECENT_FAILURE

    def _bump(self) -> None:
        self._generation += 1
        if self._moved is not None and not self._moved.done():
            self._moved.set_result(None)
        self._moved = None

    async def wait_moved(self, generation: int) -> None:
        """Return once the pin has moved past ``generation`` (a failure was reported)."""
        while self._generation == generation:
            if self._moved is None:
                self._moved = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._moved)

    def add_endpoints(self, endpoints: Iterable[str]) -> None:
        for endpoint in endpoints:
            if endpoint not in self.endpoints:
                self.endpoints.append(endpoint)

    @property
    def token(self) -> str | None:
        return self.auth.token if self.auth is not None else None

    def metadata(self, *, token: bool = True) -> tuple[tuple[str, str], ...]:
        current = self.token if token else None
        if current is None:
            return (REQUIRE_LEADER,)
        return (REQUIRE_LEADER, ("token", current))

    def count(self, path: str) -> None:
        self.request_count += 1
        if self.on_request is not None:
            self.on_request(self.endpoint, path)

    # -- unary calls with etcd's retry rules --------------------------------------------

    async def call(
        self,
        method: Unary[Req, Resp],
        request: Req,
        *,
        timeout: float | None = None,
        what: str | None = None,
        retry: Retry | None = None,
        unknown: Callable[[], None] | None = None,
    ) -> Resp:
        """Send ``request``, retrying on other members while that is safe and time remains.

        ``retry`` overrides the method's rule for this one request (see retry.py);
        ``unknown()`` is called for every attempt that may have reached etcd but whose answer
        never came (lost response, deadline, or the call cancelled in flight).

        Raises EtcdUnavailable when no member answered within ``timeout`` (default: the
        client's request timeout), EtcdError when etcd rejected the request, and ClosedError
        when the client closed meanwhile.
        """
        what = what or method.path.rsplit("/", 1)[-1]
        rule = method.retry if retry is None else retry
        now = time.monotonic()
        deadline = now + (self.request_timeout if timeout is None else timeout)
        backoff = Backoff()
        tried_since_backoff = 0
        reauthenticated = False
        with_token = method is not AUTHENTICATE
        last: grpc.aio.AioRpcError | None = None
        while True:
            remaining = deadline - now
            if remaining <= 0:
                raise unavailable(what, self.endpoints, last)
            # An attempt given less than the attempt timeout is cut short by the caller's own
            # deadline: its silence says nothing about the member, so the pin stays.
            cut_short = remaining < self.attempt_timeout
            endpoint = self.endpoint
            callable_ = self._callable(endpoint, method)
            self.count(method.path)
            token = self.token
            try:
                response: Resp = await callable_(
                    request,
                    timeout=min(remaining, self.attempt_timeout),
                    metadata=self.metadata(token=with_token),
                )
                self.heard[endpoint] = time.monotonic()
                return response
            except asyncio.CancelledError:
                if unknown is not None:
                    unknown()
                # gRPC ends the calls of a channel being closed with CancelledError: unless
                # this task itself was cancelled, that is the client closing under the call.
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    raise ClosedError(f"{what}: the client is closed") from None
                raise
            except grpc.aio.AioRpcError as err:
                last = err
                code = err.code()
                if unknown is not None and outcome_unknown(err):
                    unknown()
                if self._closed:
                    raise ClosedError(f"{what}: the client is closed") from None
                if (
                    (code == grpc.StatusCode.UNAUTHENTICATED or old_auth_revision(err))
                    and with_token
                    and self.auth is not None
                    and not reauthenticated
                ):
                    reauthenticated = True
                    await self.authenticate(stale=token)
                    now = time.monotonic()
                    continue
                if code not in MEMBER_FAULTS or not may_retry(rule, err):
                    raise translate(err, what) from None
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and cut_short:
                    raise unavailable(what, self.endpoints, last) from None
                self.fail(endpoint, f"{code.name}: {err.details()}")
                tried_since_backoff += 1
            # One pass over every member without a pause, then back off before the next pass.
            if tried_since_backoff >= len(self.endpoints):
                tried_since_backoff = 0
                delay = min(backoff.next_delay(), max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(delay)
            now = time.monotonic()

    def _callable(
        self, endpoint: str, method: Unary[Any, Any]
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        fork.check(self.pid, "this gee-h client")
        callable_ = self._unary.get((endpoint, method.path))
        if callable_ is None:
            callable_ = self.channel(endpoint).unary_unary(
                method.path,
                request_serializer=serialize,
                response_deserializer=method.response.FromString,
            )
            self._unary[(endpoint, method.path)] = callable_
        return callable_

    async def authenticate(self, stale: str | None = None) -> None:
        """Get a fresh auth token (etcd auth), single-flight; no-op without credentials."""
        if self.auth is None:
            return

        async def send(name: str, password: str) -> str:
            request = rpc.AuthenticateRequest(name=name, password=password)
            token = (await self.call(AUTHENTICATE, request, what="authenticate")).token
            if self.token is not None:
                self.events.reauthenticated()
            return token

        await self.auth.renew(send, stale)

    async def discover(self, timeout: float | None = None) -> list[str]:
        """Ask the cluster for its members' client URLs and add them to the endpoints."""
        response = await self.call(MEMBER_LIST, rpc.MemberListRequest(), timeout=timeout)
        found: list[str] = []
        scheme = "https://" if self.tls is not None else "http://"
        for member in response.members:
            if member.isLearner:
                continue
            for url in member.clientURLs:
                if url.startswith(scheme):
                    found.append(url.removeprefix(scheme).rstrip("/"))
        self.add_endpoints(found)
        return found

    async def close(self) -> None:
        """Close every channel; calls in flight end with ClosedError.

        Idempotent, and a second call finishes what a first one that was cut off left open.
        """
        self._closed = True  # no new channel from here on
        self._bump()
        if fork.forked(self.pid):  # the parent's channels: drop them, never touch them
            fork.abandon(self._channels, self._unary)
            self._channels, self._unary = {}, {}
            return
        self._unary.clear()
        while self._channels:
            endpoint, channel = next(iter(self._channels.items()))
            with contextlib.suppress(Exception):
                await channel.close(None)
            self._channels.pop(endpoint, None)


def old_auth_revision(err: grpc.aio.AioRpcError) -> bool:
    """etcd refused the request, unapplied, because roles or users changed between its
    arrival and its apply ("auth: revision in header is old"): authenticate again (a JWT
    carries the auth revision) and send it again, as etcd's own client does."""
    details = err.details() or ""
    return "revision in header is old" in details or "revision of auth store is old" in details


def serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())

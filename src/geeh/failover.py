"""Failover: which etcd member to talk to, when to leave it, and how to retry.

gee-h pins one endpoint at a time, as etcd's Go client did before it balanced per call: every
unary call and every stream goes to the pinned member. When a member fails (connection
refused, "no leader", a deadline passed, a stream went silent) the transport moves the pin to
the next endpoint, and every stream owner that was on the old member re-opens its stream on
the new one. Retries follow etcd's rules: a request is retried on another member only if
repeating it cannot change the outcome. All of gee-h's writes are compare-and-swap
transactions made to be repeatable (see election.py), so they qualify; waits between rounds
over all endpoints back off exponentially with full jitter, so a cluster without quorum does
not get a retry storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message

from ._proto import rpc_pb2 as rpc
from .errors import ClosedError, EtcdError, EtcdUnavailable, InvalidArgument

log = logging.getLogger("geeh.failover")

DEFAULT_ENDPOINT = "127.0.0.1:2379"

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

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Unary(Generic[Req, Resp]):
    """One unary etcd method: its gRPC path, response type, and whether a retry is safe."""

    path: str
    response: type[Resp]
    repeatable: bool


RANGE = Unary[rpc.RangeRequest, rpc.RangeResponse](
    "/etcdserverpb.KV/Range", rpc.RangeResponse, True
)
# Every Txn gee-h sends is a compare-and-swap that a second attempt cannot change the outcome of.
TXN = Unary[rpc.TxnRequest, rpc.TxnResponse]("/etcdserverpb.KV/Txn", rpc.TxnResponse, True)
PUT = Unary[rpc.PutRequest, rpc.PutResponse]("/etcdserverpb.KV/Put", rpc.PutResponse, False)
DELETE = Unary[rpc.DeleteRangeRequest, rpc.DeleteRangeResponse](
    "/etcdserverpb.KV/DeleteRange", rpc.DeleteRangeResponse, False
)
COMPACT = Unary[rpc.CompactionRequest, rpc.CompactionResponse](
    "/etcdserverpb.KV/Compact", rpc.CompactionResponse, False
)
# A granted lease that we never hear of expires by itself: as Go does, retry grants.
LEASE_GRANT = Unary[rpc.LeaseGrantRequest, rpc.LeaseGrantResponse](
    "/etcdserverpb.Lease/LeaseGrant", rpc.LeaseGrantResponse, True
)
LEASE_REVOKE = Unary[rpc.LeaseRevokeRequest, rpc.LeaseRevokeResponse](
    "/etcdserverpb.Lease/LeaseRevoke", rpc.LeaseRevokeResponse, True
)
LEASE_TTL = Unary[rpc.LeaseTimeToLiveRequest, rpc.LeaseTimeToLiveResponse](
    "/etcdserverpb.Lease/LeaseTimeToLive", rpc.LeaseTimeToLiveResponse, True
)
MEMBER_LIST = Unary[rpc.MemberListRequest, rpc.MemberListResponse](
    "/etcdserverpb.Cluster/MemberList", rpc.MemberListResponse, True
)
STATUS = Unary[rpc.StatusRequest, rpc.StatusResponse](
    "/etcdserverpb.Maintenance/Status", rpc.StatusResponse, True
)
AUTHENTICATE = Unary[rpc.AuthenticateRequest, rpc.AuthenticateResponse](
    "/etcdserverpb.Auth/Authenticate", rpc.AuthenticateResponse, True
)

WATCH_PATH = "/etcdserverpb.Watch/Watch"
KEEPALIVE_PATH = "/etcdserverpb.Lease/LeaseKeepAlive"

# A member that failed less than this long ago is passed over when the pin moves, as long as
# another member has not failed as recently: without it, two members failing in turn (a frozen
# one and one without a leader) would bounce the pin between them while a healthy third waits.
RECENT_FAILURE = 10.0

# Codes after which the member, not the request, is at fault: try another member.
_MEMBER_FAULTS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def parse_endpoints(endpoints: str | Sequence[str] | None) -> list[str]:
    """Normalise endpoints to "host:port" strings.

    Accepts one string (comma-separated allowed) or a sequence; "http://" prefixes are dropped.
    """
    if endpoints is None:
        return [DEFAULT_ENDPOINT]
    if isinstance(endpoints, str):
        items: Iterable[Any] = endpoints.split(",")
    elif isinstance(endpoints, Sequence):
        items = endpoints
    else:
        raise InvalidArgument(
            f"endpoints must be a string or a sequence of strings, not {type(endpoints).__name__}"
        )
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"endpoint {item!r} is not a string")
        text = item.strip()
        if not text:
            continue
        if text.startswith("https://"):
            raise InvalidArgument(f"endpoint {text!r}: TLS endpoints are not supported yet")
        text = text.removeprefix("http://").rstrip("/")
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"endpoint {item!r} is not of the form host:port")
        if text not in result:
            result.append(text)
    if not result:
        raise InvalidArgument("no etcd endpoint given")
    return result


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base*2**n))."""

    def __init__(self, base: float = 0.05, cap: float = 1.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * (2**self.attempt)))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0


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
    ) -> None:
        self.endpoints = list(endpoints)
        self.request_timeout = request_timeout
        self.attempt_timeout = attempt_timeout
        self._options = [*CHANNEL_OPTIONS, *channel_options]
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
        self.token: str | None = None
        self.credentials: tuple[str, str] | None = None
        self.request_count = (
            0  # every unary attempt and stream opened; read by tests and benchmarks
        )
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

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        if self._closed:
            raise ClosedError("the client is closed")
        channel = self._channels.get(endpoint)
        if channel is None:
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

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if self.token is None:
            return (REQUIRE_LEADER,)
        return (REQUIRE_LEADER, ("token", self.token))

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
    ) -> Resp:
        """Send ``request``, retrying on other members while that is safe and time remains.

        Raises EtcdUnavailable when no member answered within ``timeout`` (default: the
        client's request timeout) and EtcdError when etcd rejected the request.
        """
        what = what or method.path.rsplit("/", 1)[-1]
        deadline = time.monotonic() + (self.request_timeout if timeout is None else timeout)
        backoff = Backoff()
        tried_since_backoff = 0
        reauthenticated = False
        last: grpc.aio.AioRpcError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _unavailable(what, self.endpoints, last)
            endpoint = self.endpoint
            callable_ = self._unary.get((endpoint, method.path))
            if callable_ is None:
                callable_ = self.channel(endpoint).unary_unary(
                    method.path,
                    request_serializer=_serialize,
                    response_deserializer=method.response.FromString,
                )
                self._unary[(endpoint, method.path)] = callable_
            self.count(method.path)
            try:
                response: Resp = await callable_(
                    request,
                    timeout=min(remaining, self.attempt_timeout),
                    metadata=self.metadata(),
                )
                self.heard[endpoint] = time.monotonic()
                return response
            except grpc.aio.AioRpcError as err:
                last = err
                code = err.code()
                if (
                    code == grpc.StatusCode.UNAUTHENTICATED
                    and self.credentials is not None
                    and not reauthenticated
                ):
                    # Auth tokens expire (etcd's --auth-token-ttl); long campaigns outlive them.
                    reauthenticated = True
                    await self.authenticate()
                    continue
                if code not in _MEMBER_FAULTS or not _may_retry(method, err):
                    raise translate(err, what) from None
                self.fail(endpoint, f"{code.name}: {err.details()}")
                tried_since_backoff += 1
            # One pass over every member without a pause, then back off before the next pass.
            if tried_since_backoff >= len(self.endpoints):
                tried_since_backoff = 0
                delay = min(backoff.next_delay(), max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(delay)

    async def authenticate(self) -> None:
        """Get a fresh auth token with the stored credentials (etcd auth)."""
        if self.credentials is None:
            return
        name, password = self.credentials
        self.token = None
        response = await self.call(
            AUTHENTICATE, rpc.AuthenticateRequest(name=name, password=password)
        )
        self.token = response.token

    async def discover(self, timeout: float | None = None) -> list[str]:
        """Ask the cluster for its members' client URLs and add them to the endpoints."""
        response = await self.call(MEMBER_LIST, rpc.MemberListRequest(), timeout=timeout)
        found: list[str] = []
        for member in response.members:
            if member.isLearner:
                continue
            for url in member.clientURLs:
                if url.startswith("http://"):
                    found.append(url.removeprefix("http://").rstrip("/"))
        self.add_endpoints(found)
        return found

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bump()
        channels, self._channels = list(self._channels.values()), {}
        self._unary.clear()
        await asyncio.gather(*(c.close(None) for c in channels), return_exceptions=True)


class StreamUnauthenticated(ConnectionError):
    """The stream was refused for an expired auth token: authenticate, then re-open."""


class ResumableStream(Generic[Req, Resp]):
    """One bidirectional stream kept open on the pinned member, re-opened after any failure.

    The watch hub and the lessor are both this: a stream that must survive failover. When
    the stream breaks, a subclass's watchdog raises, or the pin moves (another stream or a
    call saw the member fail), the stream is closed and opened again on the pinned member;
    :meth:`opened` then replays what the new stream must carry (watches to re-create,
    keepalives to resend). Failed re-opens back off with jitter; the backoff resets as soon
    as a member answers anything, so a cluster without quorum is not hammered.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        request: type[Req],
        response: type[Resp],
        name: str,
    ) -> None:
        self._transport = transport
        self._path = path
        self._request_type = request
        self._response_type = response
        self._name = name
        self._outbox: asyncio.Queue[Req | None] | None = None
        self._open: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.heard = 0.0  # when the current stream last delivered anything

    # -- for subclasses ------------------------------------------------------------------

    async def before_open(self) -> None:
        """Work to do before each re-open; an EtcdError here backs off and tries again."""

    def opened(self) -> None:
        """The stream is open: send what it must carry (``send`` works from here on)."""

    def received(self, response: Resp) -> None:
        """One response; raise ConnectionError to leave the member."""

    def stream_ended(self) -> None:
        """The stream is gone; fail or forget what was in flight on it."""

    async def watchdog(self, endpoint: str) -> None:
        """Raise ConnectionError to leave ``endpoint`` (e.g. it went silent). Default: never."""
        await asyncio.Event().wait()

    # -- for users -------------------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise ClosedError("the client is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def send(self, request: Req) -> bool:
        """Queue ``request`` on the open stream; False if none is open (it will be replayed)."""
        if self._outbox is None:
            return False
        self._outbox.put_nowait(request)
        return True

    async def wait_open(self) -> None:
        """Start the stream if needed and wait until one is open."""
        self.start()
        while self._outbox is None:
            if self._closed:
                raise ClosedError("the client is closed")
            if self._open is None or self._open.done():
                self._open = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._open)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._open is not None and not self._open.done():
            self._open.set_exception(ClosedError("the client is closed"))
            self._open.exception()  # retrieved: nobody may be waiting
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        transport = self._transport
        backoff = Backoff()
        first = True
        while not self._closed:
            if not first:
                try:
                    await self.before_open()
                except EtcdError as err:
                    log.debug("%s: %s", self._name, err)
                    await asyncio.sleep(backoff.next_delay())
                    continue
            first = False
            endpoint, generation = transport.endpoint, transport.generation
            outbox: asyncio.Queue[Req | None] = asyncio.Queue()
            self._outbox = outbox
            self.heard = time.monotonic()
            self.opened()
            if self._open is not None and not self._open.done():
                self._open.set_result(None)
            transport.count(self._path)
            call = transport.channel(endpoint).stream_stream(
                self._path,
                request_serializer=_serialize,
                response_deserializer=self._response_type.FromString,
            )(_drain(outbox), metadata=transport.metadata())
            reader = asyncio.ensure_future(self._read(call, backoff, endpoint))
            guard = asyncio.ensure_future(self.watchdog(endpoint))
            moved = asyncio.ensure_future(transport.wait_moved(generation))
            try:
                await asyncio.wait({reader, guard, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._outbox = None
                outbox.put_nowait(None)  # ends the request iterator, even if the call is over
                call.cancel()
                for task in (reader, guard, moved):
                    task.cancel()
                await asyncio.gather(reader, guard, moved, return_exceptions=True)
                self.stream_ended()
            failure = next(
                (t.exception() for t in (reader, guard) if t.done() and not t.cancelled()), None
            )
            if failure is None or self._closed:
                continue
            if isinstance(failure, StreamUnauthenticated) and transport.credentials is not None:
                with contextlib.suppress(EtcdError):  # if it fails, back off and try again
                    await transport.authenticate()
                    continue
            transport.fail(endpoint, failure)
            await asyncio.sleep(backoff.next_delay())

    async def _read(
        self, call: grpc.aio.StreamStreamCall[Any, Any], backoff: Backoff, endpoint: str
    ) -> None:
        heard = self._transport.heard
        try:
            # read() rather than ``async for``: one async generator less per message.
            while (response := await call.read()) is not _EOF:
                heard[endpoint] = self.heard = time.monotonic()
                backoff.reset()
                self.received(cast(Resp, response))
        except grpc.aio.AioRpcError as err:
            message = f"{self._name} stream: {err.code().name} {err.details()}"
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise StreamUnauthenticated(message) from None
            raise ConnectionError(message) from None
        raise ConnectionError(f"{self._name} stream ended")


_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


async def _drain(outbox: asyncio.Queue[Req | None]) -> AsyncIterator[Req]:
    while (request := await outbox.get()) is not None:
        yield request


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _may_retry(method: Unary[Any, Any], err: grpc.aio.AioRpcError) -> bool:
    if method.repeatable:
        return True
    # A request that never left the client may be sent again whatever it is.
    details = (err.details() or "").lower()
    return err.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details
    )


def _unavailable(
    what: str, endpoints: Sequence[str], last: grpc.aio.AioRpcError | None
) -> EtcdUnavailable:
    reason = f": last error {last.code().name} {last.details()}" if last is not None else ""
    return EtcdUnavailable(
        f"{what}: no etcd endpoint answered in time (tried {', '.join(endpoints)}){reason}",
        code="UNAVAILABLE",
    )


def translate(err: grpc.aio.AioRpcError, what: str) -> EtcdError:
    """Turn a gRPC error into gee-h's: one line naming the operation and etcd's reason."""
    code = err.code()
    details = err.details() or ""
    if code in _MEMBER_FAULTS:
        return EtcdUnavailable(f"{what}: {details or code.name}", code=code.name)
    if "too large" in details or "larger than max" in details:
        return EtcdError(
            f"{what}: the request is larger than etcd accepts ({details})", code=code.name
        )
    return EtcdError(f"{what}: etcd answered {code.name}: {details}", code=code.name)

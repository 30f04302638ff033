"""Client: the connection to an etcd cluster, and the owner of everything that runs on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from ._proto import rpc_pb2 as rpc
from .core import Core
from .election import Election
from .errors import EtcdError, EtcdUnavailable, InvalidArgument
from .events import Events
from .kv import KV, Compare, KeyValue, Op, TxnResult
from .listeners import Listener
from .net.auth import Authenticator
from .net.diagnose import Unreachable, dial
from .net.endpoints import parse_endpoints
from .net.failover import Transport
from .net.retry import COMPACT, RANGE, STATUS
from .net.tls import TLS
from .session import NewSession, check_ttl
from .shards import Shards

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
    ``https://host:port``, or ``tls`` (a :class:`geeh.TLS`), makes the client speak TLS.
    Like etcdctl, the client talks to the endpoints given; with ``discover`` it also learns
    the other members' advertised URLs from the cluster (off by default: behind a
    port-forward, a load balancer or NAT those addresses may not be reachable). Entering
    the client checks that etcd answers within ``dial_timeout``; every request then gets up
    to ``request_timeout`` seconds over all members, each attempt ``attempt_timeout``.
    ``close()`` resigns every leadership, revokes every session's lease and stops every
    task and stream the client started; closing twice is harmless. ``listeners`` are told
    of elections won and lost, keepalive failures, failovers (see :class:`geeh.Listener`).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        dial_timeout: float = 5.0,
        request_timeout: float = 10.0,
        attempt_timeout: float = 2.0,
        discover: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls: TLS | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        parsed = parse_endpoints(endpoints)
        self.endpoints = parsed.addresses
        if tls is not None and not isinstance(tls, TLS):
            raise InvalidArgument(f"tls must be a geeh.TLS, not {type(tls).__name__}")
        if parsed.secure is False and tls is not None:
            raise InvalidArgument("TLS settings were given for http:// endpoints: use https://")
        if parsed.secure and tls is None:
            tls = TLS()  # https:// alone: verify against the system's CAs
        #: The TLS settings, or None for plaintext.
        self.tls = tls
        self.dial_timeout = _positive(dial_timeout, "dial_timeout")
        request_timeout = _positive(request_timeout, "request_timeout")
        attempt_timeout = _positive(attempt_timeout, "attempt_timeout")
        if (username is None) != (password is None):
            raise InvalidArgument("give both username and password, or neither")
        self._discover = discover
        auth = (
            Authenticator(username, password)
            if username is not None and password is not None
            else None
        )
        transport = Transport(
            self.endpoints,
            request_timeout=request_timeout,
            attempt_timeout=attempt_timeout,
            auth=auth,
            tls=tls.load() if tls is not None else None,
            events=Events(listeners),
        )
        self._core = Core(transport)
        self._kv = KV(transport)
        self._connected = False
        self._closing = asyncio.Lock()
        self._closed = False  # everything closed: set once close() ran to its end

    # -- life cycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Check that etcd answers (within ``dial_timeout``) and learn the cluster's members."""
        self._core.check_open()
        if self._connected:
            return
        transport = self._core.transport

        async def answers() -> None:
            await transport.authenticate()
            if self._discover:
                await transport.discover(timeout=self.dial_timeout)
            else:
                await transport.call(STATUS, rpc.StatusRequest(), timeout=self.dial_timeout)

        probe_timeout = min(self.dial_timeout, 2.0)
        try:
            await dial(answers(), self.endpoints, transport.tls, probe_timeout)
        except Unreachable as err:
            within = "" if err.early else f" within {self.dial_timeout:g}s"
            raise EtcdUnavailable(
                f"cannot reach etcd at {', '.join(self.endpoints)}{within}: "
                f"{err.reason or 'is it running?'}",
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
        """Resign, revoke, stop everything this client started.

        Idempotent: a second call waits for a first one that is running, and finishes what a
        first one that was cut off (cancelled) left undone.
        """
        async with self._closing:
            if not self._closed:
                await self._core.close()
                self._closed = True

    @property
    def closed(self) -> bool:
        return self._core.closed

    @property
    def core(self) -> Core:
        """The internals that elections, sessions and observers share (for tools and tests)."""
        return self._core

    def add_listener(self, listener: Listener) -> None:
        """Tell ``listener`` of this client's events from now on (see :class:`geeh.Listener`)."""
        self._core.events.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop telling ``listener``; no-op if it was not added."""
        self._core.events.remove(listener)

    # -- what users make with it ---------------------------------------------------------------

    def election(self, name: str | bytes) -> Election:
        """The election called ``name`` (str or bytes, not empty)."""
        self._core.check_open()
        return Election(self._core, name)

    def shards(self, name: str | bytes, count: int) -> Shards:
        """``count`` shards under ``name``, each the election ``name/<shard>``, led by the
        live members in balanced shares: ``await client.shards("jobs", 256).run(work, value)``.
        """
        self._core.check_open()
        return Shards(self._core, name, count)

    def session(self, ttl: int = 10, *, lease: int | None = None) -> NewSession:
        """A new session: a lease of ``ttl`` seconds kept alive until closed.

        ``await client.session(ttl)``, or ``async with client.session(ttl) as session:`` to
        close it (revoking the lease) on exit. With ``lease``, resume that existing lease
        instead of granting one.
        """
        self._core.check_open()
        return NewSession(self._core, check_ttl(ttl), lease)

    async def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one). For tests/ops.

        etcd lets only its root role compact: anyone else gets an EtcdError that says so.
        """
        try:
            if revision is None:
                response = await self._core.transport.call(
                    RANGE, rpc.RangeRequest(key=b"\x00", count_only=True), what="compact"
                )
                revision = response.header.revision
            await self._core.transport.call(
                COMPACT, rpc.CompactionRequest(revision=revision, physical=True)
            )
        except EtcdError as err:
            if err.code != "PERMISSION_DENIED":
                raise
            raise EtcdError(
                "compact: etcd answered permission denied: only its root role may compact",
                code=err.code,
            ) from None
        return revision

    # -- the KV surface: a leader's own data (fenced forms: Leadership.put, .txn) -------------

    async def get(self, key: str | bytes) -> KeyValue | None:
        """The key, or None if it does not exist."""
        return await self._kv.get(key)

    async def get_prefix(self, prefix: str | bytes) -> list[KeyValue]:
        """Every key starting with ``prefix``, in key order."""
        return await self._kv.get_prefix(prefix)

    async def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0) -> int:
        """Write ``value`` to ``key``; returns the revision. Not resent once it may have landed."""
        return await self._kv.put(key, value, lease=lease)

    async def delete(self, key: str | bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it); returns the revision."""
        return await self._kv.delete(key, prefix=prefix)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``; see :mod:`geeh.kv`."""
        return await self._kv.txn(compares, success, failure)

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else self._core.transport.endpoint
        return f"<geeh.Client {state}>"

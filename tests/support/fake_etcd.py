"""A scripted etcd member in memory, behind a fake gRPC channel.

For orderings a real etcd cannot be made to produce on demand. Everything above the channel
runs for real (transport, watch hub, lessor, election); the fake answers unary calls from a
small multi-version store, and the test decides what the watch stream delivers and when:
``push`` sends a batch of events to one watch, in the order the test chooses, as etcd may do
across watches (each watch is ordered, two watches are not ordered relative to each other).

Install it with :func:`installed`: every endpoint of a client then reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest

import geeh
from geeh._proto import kv_pb2, rpc_pb2

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
WATCH = "/etcdserverpb.Watch/Watch"
KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@dataclass
class Fault:
    """Unary calls to ``path`` for which ``match(request)`` holds fail with ``error``."""

    path: str
    error: grpc.aio.AioRpcError
    times: int | None  # None: until healed
    match: Callable[[Any], bool]
    hits: int = 0


class FakeEtcd:
    """One etcd member: a multi-version store, leases, and a watch stream driven by the test."""

    def __init__(self) -> None:
        self.revision = 1
        self.compacted = 0
        self._versions: dict[bytes, list[tuple[int, kv_pb2.KeyValue | None]]] = {}
        self.leases: dict[int, int] = {}  # lease ID -> TTL
        self.next_lease = 0x1000
        # Serializable reads answer from this revision when set: a member behind the others.
        self.serializable_revision: int | None = None
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, Any]] = []  # every unary call, in order
        self.watch_streams: list[FakeCall] = []  # every watch stream opened, the newest last
        self.creates: list[rpc_pb2.WatchCreateRequest] = []  # every watch created, in order
        self.live: dict[int, rpc_pb2.WatchCreateRequest] = {}  # watch ID -> its create request
        self.calls: list[FakeCall] = []  # every stream opened
        # Scripted watch creation: while ``hold_creates`` is set, create requests wait in
        # ``held`` until the test calls :meth:`answer_held` (a slow link, a busy member).
        self.hold_creates = False
        self.held: list[tuple[FakeCall, rpc_pb2.WatchCreateRequest]] = []
        # RBAC: watches on keys under these prefixes are refused, as etcd refuses them
        # ("etcdserver: permission denied"), and so are the watches of a stream opened with
        # an expired token.
        self.denied: set[bytes] = set()
        self.expired: set[str] = set()
        self.anonymous_refusals = False  # etcd 3.4: a refusal carries watch ID -1
        self.tokens = 0  # Authenticate requests answered

    # -- the store ---------------------------------------------------------------------------

    def state(self, at: int | None = None) -> dict[bytes, kv_pb2.KeyValue]:
        at = self.revision if at is None else at
        state = {}
        for key, versions in self._versions.items():
            seen = [kv for rev, kv in versions if rev <= at]
            if seen and seen[-1] is not None:
                state[key] = seen[-1]
        return state

    def _put(self, key: bytes, value: bytes, lease: int, rev: int) -> kv_pb2.KeyValue:
        old = self.state().get(key)
        kv = kv_pb2.KeyValue(
            key=key,
            value=value,
            lease=lease,
            create_revision=old.create_revision if old else rev,
            mod_revision=rev,
            version=old.version + 1 if old else 1,
        )
        self._versions.setdefault(key, []).append((rev, kv))
        return kv

    def _delete(self, keys: Iterable[bytes], rev: int) -> list[kv_pb2.Event]:
        events = []
        current = self.state()
        for key in keys:
            if key in current:
                self._versions[key].append((rev, None))
                events.append(
                    kv_pb2.Event(
                        type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=key, mod_revision=rev)
                    )
                )
        return events

    def put(self, key: bytes, value: bytes = b"", lease: int = 0) -> kv_pb2.KeyValue:
        """Write ``key`` (a test's own write); its events are not delivered unless pushed."""
        self.revision += 1
        return self._put(key, value, lease, self.revision)

    def delete(self, *keys: bytes) -> list[kv_pb2.Event]:
        """Delete ``keys`` in one revision; returns the DELETE events, to push where wanted."""
        self.revision += 1
        return self._delete(keys, self.revision)

    def _header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=1, member_id=1, revision=self.revision if revision is None else revision
        )

    # -- unary calls -------------------------------------------------------------------------

    def fail(
        self,
        path: str,
        code: grpc.StatusCode,
        details: str = "",
        *,
        times: int | None = 1,
        match: Callable[[Any], bool] = lambda _: True,
    ) -> Fault:
        fault = Fault(path, rpc_error(code, details), times, match)
        self.faults.append(fault)
        return fault

    def heal(self) -> None:
        self.faults.clear()

    async def unary(self, path: str, request: Any) -> Any:
        self.requests.append((path, request))
        for fault in self.faults:
            if fault.path == path and fault.match(request):
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                raise fault.error
        method = path.rsplit("/", 1)[-1]
        return getattr(self, f"_{method}")(request)

    def _in_range(self, request: Any, key: bytes) -> bool:
        if not request.range_end:
            return key == request.key
        if request.range_end == b"\x00":
            return key >= request.key
        return bool(request.key <= key < request.range_end)

    def _Range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        at = self.revision
        if request.revision:
            if request.revision > self.revision:
                raise rpc_error(
                    grpc.StatusCode.OUT_OF_RANGE,
                    "etcdserver: mvcc: required revision is a future revision",
                )
            if request.revision < self.compacted:
                raise rpc_error(
                    grpc.StatusCode.OUT_OF_RANGE,
                    "etcdserver: mvcc: required revision has been compacted",
                )
            at = request.revision
        elif request.serializable and self.serializable_revision is not None:
            at = self.serializable_revision
        kvs = [kv for key, kv in sorted(self.state(at).items()) if self._in_range(request, key)]
        if request.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= request.max_create_revision]
        if request.sort_target == rpc_pb2.RangeRequest.CREATE:
            kvs.sort(key=lambda kv: kv.create_revision)
        if request.sort_order == rpc_pb2.RangeRequest.DESCEND:
            kvs.reverse()
        count = len(kvs)
        if request.limit:
            kvs = kvs[: request.limit]
        if request.keys_only:
            kvs = [kv_pb2.KeyValue(**{f: getattr(kv, f) for f in _KEY_FIELDS}) for kv in kvs]
        if request.count_only:
            kvs = []
        return rpc_pb2.RangeResponse(
            header=self._header(at),
            kvs=kvs,
            count=count,
            more=len(kvs) < count and not request.count_only,
        )

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        kv = self.state().get(c.key)
        if c.target == rpc_pb2.Compare.VALUE:
            if kv is None:
                return False  # as etcd: a value compare on a missing key always fails
            return {
                rpc_pb2.Compare.EQUAL: kv.value == c.value,
                rpc_pb2.Compare.NOT_EQUAL: kv.value != c.value,
                rpc_pb2.Compare.GREATER: kv.value > c.value,
                rpc_pb2.Compare.LESS: kv.value < c.value,
            }[c.result]
        actual = {
            rpc_pb2.Compare.CREATE: kv.create_revision if kv else 0,
            rpc_pb2.Compare.MOD: kv.mod_revision if kv else 0,
            rpc_pb2.Compare.VERSION: kv.version if kv else 0,
            rpc_pb2.Compare.LEASE: kv.lease if kv else 0,
        }[c.target]
        wanted = getattr(c, c.WhichOneof("target_union") or "create_revision")
        return {
            rpc_pb2.Compare.EQUAL: actual == wanted,
            rpc_pb2.Compare.NOT_EQUAL: actual != wanted,
            rpc_pb2.Compare.GREATER: actual > wanted,
            rpc_pb2.Compare.LESS: actual < wanted,
        }[c.result]

    def _Txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        wrote: list[bool] = []
        succeeded, responses = self._apply(request, self.revision + 1, wrote)
        if wrote:
            self.revision += 1
        return rpc_pb2.TxnResponse(header=self._header(), succeeded=succeeded, responses=responses)

    def _apply(
        self, request: rpc_pb2.TxnRequest, rev: int, wrote: list[bool]
    ) -> tuple[bool, list[rpc_pb2.ResponseOp]]:
        """One Txn's branch, nested Txns included; ``wrote`` gets an entry for each write."""
        succeeded = all(self._compare(c) for c in request.compare)
        ops = request.success if succeeded else request.failure
        responses = []
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                responses.append(rpc_pb2.ResponseOp(response_range=self._Range(op.request_range)))
            elif kind == "request_put":
                put = op.request_put
                self._put(put.key, put.value, put.lease, rev)
                wrote.append(True)
                responses.append(rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse()))
            elif kind == "request_delete_range":
                keys = [k for k in self.state() if self._in_range(op.request_delete_range, k)]
                deleted = self._delete(keys, rev)
                wrote.append(True)
                responses.append(
                    rpc_pb2.ResponseOp(
                        response_delete_range=rpc_pb2.DeleteRangeResponse(deleted=len(deleted))
                    )
                )
            elif kind == "request_txn":
                inner, nested = self._apply(op.request_txn, rev, wrote)
                response = rpc_pb2.TxnResponse(
                    header=self._header(), succeeded=inner, responses=nested
                )
                responses.append(rpc_pb2.ResponseOp(response_txn=response))
        return succeeded, responses

    def _LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        lease, self.next_lease = self.next_lease, self.next_lease + 1
        self.leases[lease] = request.TTL
        return rpc_pb2.LeaseGrantResponse(header=self._header(), ID=lease, TTL=request.TTL)

    def revoke(self, lease: int) -> list[kv_pb2.Event]:
        """Revoke ``lease``: its keys go in one revision; returns their DELETE events."""
        del self.leases[lease]
        keys = [k for k, kv in self.state().items() if kv.lease == lease]
        if not keys:
            return []
        return self.delete(*keys)

    def _LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        if request.ID not in self.leases:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
        self.revoke(request.ID)
        return rpc_pb2.LeaseRevokeResponse(header=self._header())

    def _LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        ttl = self.leases.get(request.ID, -1)
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self._header(), ID=request.ID, TTL=ttl, grantedTTL=max(ttl, 0)
        )

    def _Status(self, request: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse:
        return rpc_pb2.StatusResponse(header=self._header(), version="3.5.1", leader=1)

    def _MemberList(self, request: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        return rpc_pb2.MemberListResponse(header=self._header())

    def _Authenticate(self, request: rpc_pb2.AuthenticateRequest) -> rpc_pb2.AuthenticateResponse:
        self.tokens += 1
        return rpc_pb2.AuthenticateResponse(header=self._header(), token=f"token-{self.tokens}")

    def _Compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        self.compacted = request.revision
        return rpc_pb2.CompactionResponse(header=self._header())

    # -- the watch stream, scripted by the test ----------------------------------------------

    def watch_on(self, key: bytes, range_end: bytes = b"") -> int | None:
        """The ID of the live watch on exactly ``key`` .. ``range_end``, if there is one."""
        found = [i for i, c in self.live.items() if c.key == key and c.range_end == range_end]
        return found[-1] if found else None

    def push(self, watch_id: int, events: list[kv_pb2.Event], revision: int | None = None) -> None:
        """Deliver ``events`` to one watch now, in one response (header: ``revision``)."""
        self.respond(
            rpc_pb2.WatchResponse(header=self._header(revision), watch_id=watch_id, events=events)
        )

    def push_compacted(self, watch_id: int) -> None:
        """End one watch as etcd does when its start revision was compacted."""
        self.live.pop(watch_id, None)
        self.respond(
            rpc_pb2.WatchResponse(
                header=self._header(),
                watch_id=watch_id,
                canceled=True,
                compact_revision=self.compacted,
                cancel_reason="mvcc: required revision has been compacted",
            )
        )

    def respond(self, response: Any) -> None:
        self.watch_streams[-1].responses.put_nowait(response)

    def break_watch_stream(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.respond(rpc_error(code, "fake: stream broken"))

    def _watch_request(self, call: FakeCall, request: rpc_pb2.WatchRequest) -> None:
        kind = request.WhichOneof("request_union")
        if kind == "create_request":
            create = request.create_request
            self.creates.append(create)
            if self.hold_creates:
                self.held.append((call, create))
            else:
                self._create(call, create)
        elif kind == "cancel_request":
            watch_id = request.cancel_request.watch_id
            if self.live.pop(watch_id, None) is not None:
                call.responses.put_nowait(
                    rpc_pb2.WatchResponse(header=self._header(), watch_id=watch_id, canceled=True)
                )
        else:  # a progress request
            call.responses.put_nowait(rpc_pb2.WatchResponse(header=self._header(), watch_id=-1))

    def _create(self, call: FakeCall, create: rpc_pb2.WatchCreateRequest) -> None:
        if call.token in self.expired or any(create.key.startswith(p) for p in self.denied):
            call.responses.put_nowait(
                rpc_pb2.WatchResponse(
                    header=self._header(),
                    watch_id=-1 if self.anonymous_refusals else create.watch_id,
                    created=True,
                    canceled=True,
                    cancel_reason="etcdserver: permission denied",
                )
            )
            return
        if create.start_revision and create.start_revision < self.compacted:
            call.responses.put_nowait(
                rpc_pb2.WatchResponse(
                    header=self._header(),
                    watch_id=create.watch_id,
                    created=True,
                    canceled=True,
                    compact_revision=self.compacted,
                )
            )
            return
        if call is self.watch_streams[-1]:
            self.live[create.watch_id] = create
        call.responses.put_nowait(
            rpc_pb2.WatchResponse(header=self._header(), watch_id=create.watch_id, created=True)
        )
        past = self._history(create)
        if past:  # as etcd does, a watch from a past revision first catches up
            call.responses.put_nowait(
                rpc_pb2.WatchResponse(header=self._header(), watch_id=create.watch_id, events=past)
            )

    def answer_held(self) -> None:
        """Answer the held create requests (those of a stream since closed are lost)."""
        held, self.held = self.held, []
        for call, create in held:
            if not call.cancelled:
                self._create(call, create)

    def notify(self, events: list[kv_pb2.Event]) -> None:
        """Deliver ``events`` to every live watch they concern, as etcd does: one response per
        watch, without the events before its start revision."""
        for watch_id, create in list(self.live.items()):
            mine = [
                e
                for e in events
                if self._in_range(create, e.kv.key) and e.kv.mod_revision >= create.start_revision
            ]
            if mine:
                self.push(watch_id, mine)

    def _history(self, create: rpc_pb2.WatchCreateRequest) -> list[kv_pb2.Event]:
        if not create.start_revision:
            return []
        events = []
        for key, versions in self._versions.items():
            if not self._in_range(create, key):
                continue
            for rev, kv in versions:
                if rev < create.start_revision or (kv is None and rev <= self.compacted):
                    continue  # compaction drops tombstones up to its revision
                if kv is None and rpc_pb2.WatchCreateRequest.NODELETE not in create.filters:
                    deleted = kv_pb2.KeyValue(key=key, mod_revision=rev)
                    events.append(kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=deleted))
                elif kv is not None and rpc_pb2.WatchCreateRequest.NOPUT not in create.filters:
                    events.append(kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv))
        return sorted(events, key=lambda e: e.kv.mod_revision)

    def _keepalive_request(self, call: FakeCall, request: rpc_pb2.LeaseKeepAliveRequest) -> None:
        ttl = self.leases.get(request.ID, 0)
        call.responses.put_nowait(
            rpc_pb2.LeaseKeepAliveResponse(header=self._header(), ID=request.ID, TTL=ttl)
        )

    async def close(self) -> None:
        """Stop serving every stream (the test's clean-up)."""
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*(c._serving for c in self.calls), return_exceptions=True)

    # -- the channel -------------------------------------------------------------------------

    def channel(self, *_: Any, **__: Any) -> FakeChannel:
        return FakeChannel(self)


_KEY_FIELDS = ("key", "create_revision", "mod_revision", "version", "lease")


class FakeCall:
    """One bidirectional stream: requests are served as they come, responses read in order."""

    def __init__(
        self, fake: FakeEtcd, path: str, requests: AsyncIterator[Any], token: str | None = None
    ) -> None:
        self.fake = fake
        self.path = path
        self.token = token  # the auth token the stream was opened with
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False
        if path == WATCH:
            fake.live.clear()  # a new stream: watches are created afresh on it
            fake.watch_streams.append(self)
        self._serving = asyncio.ensure_future(self._serve(requests))
        fake.calls.append(self)

    async def _serve(self, requests: AsyncIterator[Any]) -> None:
        async for request in requests:
            if self.path == WATCH:
                self.fake._watch_request(self, request)
            elif self.path == KEEPALIVE:
                self.fake._keepalive_request(self, request)

    async def read(self) -> Any:
        item = await self.responses.get()
        if isinstance(item, BaseException):
            self.responses.put_nowait(item)
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        self._serving.cancel()
        self.responses.put_nowait(rpc_error(grpc.StatusCode.CANCELLED, "cancelled"))
        return True


class FakeChannel:
    """Stands in for grpc.aio.Channel: unary calls and streams go to the fake member."""

    def __init__(self, fake: FakeEtcd) -> None:
        self.fake = fake

    def unary_unary(self, path: str, **_: Any) -> Callable[..., Any]:
        async def call(request: Any, **__: Any) -> Any:
            await asyncio.sleep(0)  # a network hop: let other tasks run, as a real call does
            return await self.fake.unary(path, request)

        return call

    def stream_stream(self, path: str, **_: Any) -> Callable[..., FakeCall]:
        def open_(requests: AsyncIterator[Any], metadata: Any = (), **__: Any) -> FakeCall:
            return FakeCall(self.fake, path, requests, dict(metadata or ()).get("token"))

        return open_

    async def close(self, grace: float | None = None) -> None:
        return None


@contextlib.asynccontextmanager
async def installed(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEtcd]:
    """A fake member that every channel gRPC opens from now on reaches."""
    fake = FakeEtcd()
    monkeypatch.setattr(grpc.aio, "insecure_channel", fake.channel)
    try:
        yield fake
    finally:
        await fake.close()


def fake_client() -> geeh.Client:
    """A client of the fake member, with short timeouts (the fake answers at once)."""
    return geeh.Client("fake:2379", discover=False, request_timeout=0.5, attempt_timeout=0.2)

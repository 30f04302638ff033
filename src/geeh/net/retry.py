"""Which request may be sent again, and how long to wait between rounds.

etcd's rule, as its Go client applies it: a request is retried on another member only if
repeating it cannot change the outcome. Reads and lease calls qualify; a write qualifies only
if it never left the client, or if it is built so that a late first attempt is harmless
(gee-h's compare-and-swap Txns: see election.py and leadership.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from .._proto import rpc_pb2 as rpc
from ..errors import EtcdError, EtcdUnavailable

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Unary(Generic[Req, Resp]):
    """One unary etcd method: its gRPC path, response type, and whether a retry is safe."""

    path: str
    response: type[Resp]
    repeatable: bool

    def with_repeatable(self, repeatable: bool) -> Unary[Req, Resp]:
        """The same method under another retry rule (for one kind of request)."""
        return Unary(self.path, self.response, repeatable)


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

# Codes after which the member, not the request, is at fault: try another member.
MEMBER_FAULTS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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


def may_retry(method: Unary[Any, Any], err: grpc.aio.AioRpcError) -> bool:
    """Whether ``err`` from one attempt allows sending the same request again."""
    if method.repeatable:
        return True
    # A request that never left the client may be sent again whatever it is.
    details = (err.details() or "").lower()
    return err.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details
    )


def unavailable(
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
    if code in MEMBER_FAULTS:
        return EtcdUnavailable(f"{what}: {details or code.name}", code=code.name)
    if "too large" in details or "larger than max" in details:
        return EtcdError(
            f"{what}: the request is larger than etcd accepts ({details})", code=code.name
        )
    return EtcdError(f"{what}: etcd answered {code.name}: {details}", code=code.name)

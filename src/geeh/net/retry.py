"""Which request may be sent again, and how long to wait between rounds.

etcd's rule, as its Go client applies it: a request is retried on another member only if
repeating it cannot change the outcome. Reads and lease calls qualify. A write qualifies only
if it never left the client (Go's rule, and the default for Put, DeleteRange and Txn), or if
the caller says, for that one request, that neither a second attempt nor a first one applied
late can do harm: ``transport.call(TXN, txn, retry=Retry.SAFE)``. Every Txn gee-h sends states
its rule where it is sent, with the compare that makes a late apply harmless:

- join: ``CreateRevision(key) == 0``, so a late attempt only ever finds the key there; after a
  withdraw it could create it again, so the campaign records that an attempt's outcome is
  unknown and the withdraw watches for that (withdraw.py);
- proclaim: guarded on the mod revision it replaces, so a late attempt cannot overwrite a
  newer value;
- resign, withdraw: delete only the key created at our revision, never a newer one.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from .._proto import rpc_pb2 as rpc
from ..errors import EtcdError, EtcdUnavailable

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class Retry(enum.Enum):
    """What may be done with a request after an attempt whose outcome is unknown."""

    SAFE = "send again: neither a repeat nor a late first attempt can change the outcome"
    IF_UNSENT = "send again only if no attempt can have reached etcd (Go's rule for writes)"


@dataclass(frozen=True)
class Unary(Generic[Req, Resp]):
    """One unary etcd method: its gRPC path, response type, and default retry rule."""

    path: str
    response: type[Resp]
    retry: Retry


SAFE, IF_UNSENT = Retry.SAFE, Retry.IF_UNSENT

RANGE = Unary[rpc.RangeRequest, rpc.RangeResponse](
    "/etcdserverpb.KV/Range", rpc.RangeResponse, SAFE
)
# Writes follow Go's rule unless the request says otherwise (see the module's docstring).
TXN = Unary[rpc.TxnRequest, rpc.TxnResponse]("/etcdserverpb.KV/Txn", rpc.TxnResponse, IF_UNSENT)
PUT = Unary[rpc.PutRequest, rpc.PutResponse]("/etcdserverpb.KV/Put", rpc.PutResponse, IF_UNSENT)
DELETE = Unary[rpc.DeleteRangeRequest, rpc.DeleteRangeResponse](
    "/etcdserverpb.KV/DeleteRange", rpc.DeleteRangeResponse, IF_UNSENT
)
COMPACT = Unary[rpc.CompactionRequest, rpc.CompactionResponse](
    "/etcdserverpb.KV/Compact", rpc.CompactionResponse, IF_UNSENT
)
# A granted lease that we never hear of expires by itself: as Go does, retry grants.
LEASE_GRANT = Unary[rpc.LeaseGrantRequest, rpc.LeaseGrantResponse](
    "/etcdserverpb.Lease/LeaseGrant", rpc.LeaseGrantResponse, SAFE
)
LEASE_REVOKE = Unary[rpc.LeaseRevokeRequest, rpc.LeaseRevokeResponse](
    "/etcdserverpb.Lease/LeaseRevoke", rpc.LeaseRevokeResponse, SAFE
)
LEASE_TTL = Unary[rpc.LeaseTimeToLiveRequest, rpc.LeaseTimeToLiveResponse](
    "/etcdserverpb.Lease/LeaseTimeToLive", rpc.LeaseTimeToLiveResponse, SAFE
)
MEMBER_LIST = Unary[rpc.MemberListRequest, rpc.MemberListResponse](
    "/etcdserverpb.Cluster/MemberList", rpc.MemberListResponse, SAFE
)
STATUS = Unary[rpc.StatusRequest, rpc.StatusResponse](
    "/etcdserverpb.Maintenance/Status", rpc.StatusResponse, SAFE
)
AUTHENTICATE = Unary[rpc.AuthenticateRequest, rpc.AuthenticateResponse](
    "/etcdserverpb.Auth/Authenticate", rpc.AuthenticateResponse, SAFE
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


def never_sent(err: grpc.aio.AioRpcError) -> bool:
    """Whether the failed attempt certainly never reached etcd (no connection was made)."""
    details = (err.details() or "").lower()
    return err.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details
    )


# Codes that are not etcd's verdict on the request: it may or may not have been applied.
UNKNOWN_OUTCOME = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


def outcome_unknown(err: grpc.aio.AioRpcError) -> bool:
    """Whether the failed attempt may have been applied by etcd (now or later)."""
    return err.code() in UNKNOWN_OUTCOME and not never_sent(err)


def may_retry(retry: Retry, err: grpc.aio.AioRpcError) -> bool:
    """Whether ``err`` from one attempt allows sending the same request again."""
    return retry is Retry.SAFE or never_sent(err)


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

"""gee-h: leader election on etcd v3, for asyncio and blocking code.

The asyncio API::

    async with geeh.Client(["127.0.0.1:2379"]) as client:
        election = client.election("my-election")
        async with election.campaign(b"my-value", ttl=5) as leadership:
            ...  # we lead until the block ends; a loss cancels it (LeadershipLost)

The blocking API mirrors the C++ gee-h: ActiveCompletionQueue, LeaderElection,
watch_election. Interoperates with etcd's Go election recipe and ``etcdctl elect``.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from . import _grpc_setup  # noqa: F401 - first: gee-h's gRPC settings, when gRPC loads
from .errors import (
    CandidateRemoved,
    ClosedError,
    ElectionError,
    EtcdError,
    EtcdUnavailable,
    ForkedError,
    GeehError,
    InvalidArgument,
    LeadershipLost,
    NotLeader,
    PermissionDenied,
    SessionExpired,
    Timeout,
    TransferFailed,
    WrongThread,
)

if TYPE_CHECKING:
    from . import kv
    from .blocking import ActiveCompletionQueue, ElectionObserver, LeaderElection, watch_election
    from .blocking_shards import ShardedElection
    from .campaign import Campaign
    from .candidates import Candidate
    from .client import Client
    from .election import Election
    from .kv import KeyValue, TxnResult
    from .leader import Leader
    from .leadership import Leadership
    from .listeners import Listener
    from .loss import LossSignal
    from .net.tls import TLS
    from .observe import Observation
    from .session import Session
    from .shards import Shards

# Everything but the errors is imported on first use (PEP 562), so that ``import geeh``, the
# ``geeh`` command's --help and the pytest plugin do not load gRPC; geeh._grpc_setup applies
# gee-h's gRPC settings whenever it loads.
_WHERE = {
    "ActiveCompletionQueue": "blocking",
    "Campaign": "campaign",
    "Candidate": "candidates",
    "Client": "client",
    "Election": "election",
    "ElectionObserver": "blocking",
    "KeyValue": "kv",
    "Leader": "leader",
    "LeaderElection": "blocking",
    "Leadership": "leadership",
    "Listener": "listeners",
    "LossSignal": "loss",
    "Observation": "observe",
    "Session": "session",
    "ShardedElection": "blocking_shards",
    "Shards": "shards",
    "TLS": "net.tls",
    "TxnResult": "kv",
    "watch_election": "blocking",
}


def __getattr__(name: str) -> Any:
    if name == "kv":
        value: Any = importlib.import_module(".kv", __name__)
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"

# A library is quiet: with no logging configured, nothing reaches stderr (not even through
# Python's last-resort handler). Configure logging to see gee-h's records.
logging.getLogger("geeh").addHandler(logging.NullHandler())

__all__ = [
    "TLS",
    "ActiveCompletionQueue",
    "Campaign",
    "Candidate",
    "CandidateRemoved",
    "Client",
    "ClosedError",
    "Election",
    "ElectionError",
    "ElectionObserver",
    "EtcdError",
    "EtcdUnavailable",
    "ForkedError",
    "GeehError",
    "InvalidArgument",
    "KeyValue",
    "Leader",
    "LeaderElection",
    "Leadership",
    "LeadershipLost",
    "Listener",
    "LossSignal",
    "NotLeader",
    "Observation",
    "PermissionDenied",
    "Session",
    "SessionExpired",
    "ShardedElection",
    "Shards",
    "Timeout",
    "TransferFailed",
    "TxnResult",
    "WrongThread",
    "__version__",
    "kv",
    "watch_election",
]

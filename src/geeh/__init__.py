"""gee-h: leader election on etcd v3, for asyncio and blocking code.

The asyncio API::

    async with geeh.Client(["127.0.0.1:2379"]) as client:
        election = client.election("my-election")
        async with election.campaign(b"my-value", ttl=5) as leadership:
            ...  # we lead until the block ends; a loss cancels it (LeadershipLost)

The blocking API mirrors the C++ gee-h: ActiveCompletionQueue, LeaderElection,
watch_election. Interoperates with etcd's Go election recipe and ``etcdctl elect``.
"""

import logging

from . import _grpc_setup, fork, kv  # noqa: F401 - first: gRPC settings before it loads
from .blocking import ActiveCompletionQueue, ElectionObserver, LeaderElection, watch_election
from .blocking_shards import ShardedElection
from .candidates import Candidate
from .client import Client
from .election import Campaign, Election
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
from .kv import KeyValue, TxnResult
from .leader import Leader
from .leadership import Leadership
from .listeners import Listener
from .loss import LossSignal
from .net.tls import TLS
from .observe import Observation
from .session import Session
from .shards import Shards

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

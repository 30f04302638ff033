"""The cluster as an operator first looks at it: its members, their health, the raft leader.

The member list comes from any member that answers (MemberList, with failover); then each
member is asked for its Status directly, one attempt with a short timeout and without
``hasleader``, so that a member cut off from the quorum still says so, and a member that is
down is shown as down instead of being skipped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import grpc
import grpc.aio

from ._proto import rpc_pb2 as rpc
from .net.failover import Transport, serialize
from .net.retry import MEMBER_LIST, STATUS

# How long a member may take to answer Status before it is shown as down.
STATUS_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member: what MemberList says of it, and what it said itself (if it answered)."""

    id: int
    name: str
    client_urls: list[str]
    is_learner: bool
    endpoint: str | None  # the client URL it was asked at, as host:port
    error: str | None = None  # why it is down (no answer, or an error); None if it answered
    version: str = ""
    leader_id: int = 0  # the raft leader as this member knows it (0: none)
    raft_term: int = 0
    raft_index: int = 0
    revision: int = 0
    db_size: int = 0
    alarms: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.error is None

    @property
    def health(self) -> str:
        """ "healthy", or what is wrong: "down: ...", "no leader", "errors: ..."."""
        if self.error is not None:
            return f"down: {self.error}"
        if not self.leader_id:
            return "no leader"
        if self.alarms:
            return "errors: " + "; ".join(self.alarms)
        return "healthy"

    @property
    def healthy(self) -> bool:
        return self.health == "healthy"


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """Every member, the raft leader (as the members that answered see it), the revision."""

    cluster_id: int
    members: list[MemberStatus]
    using: str  # the endpoint the client is pinned to

    @property
    def leader(self) -> MemberStatus | None:
        """The raft leader most answering members agree on, if it is a known member."""
        votes = [m.leader_id for m in self.members if m.answered and m.leader_id]
        if not votes:
            return None
        leader_id = max(set(votes), key=votes.count)
        return next((m for m in self.members if m.id == leader_id), None)

    @property
    def revision(self) -> int:
        """The newest revision any member reported (0 if none answered)."""
        return max((m.revision for m in self.members), default=0)

    @property
    def raft_term(self) -> int:
        return max((m.raft_term for m in self.members), default=0)

    @property
    def healthy(self) -> bool:
        return all(m.healthy for m in self.members)


def member_endpoint(urls: list[str]) -> str | None:
    """The first client URL as "host:port" (what the client dials), or None if it has none."""
    for url in urls:
        for scheme in ("http://", "https://", "unix://", "unixs://"):
            if url.startswith(scheme):
                return url.removeprefix(scheme).rstrip("/")
    return None


async def cluster_status(transport: Transport, timeout: float = STATUS_TIMEOUT) -> ClusterStatus:
    """List the members (with failover), then ask each one for its Status, all at once."""
    listing = await transport.call(MEMBER_LIST, rpc.MemberListRequest(), what="member list")
    by_name = sorted(listing.members, key=lambda m: (m.name, m.ID))
    members = await asyncio.gather(
        *(_member_status(transport, member, timeout) for member in by_name)
    )
    return ClusterStatus(listing.header.cluster_id, list(members), transport.endpoint)


async def _member_status(transport: Transport, member: rpc.Member, timeout: float) -> MemberStatus:
    urls = list(member.clientURLs)
    base = MemberStatus(member.ID, member.name, urls, member.isLearner, member_endpoint(urls))
    if base.endpoint is None:
        return replace(base, error="not started (no client URL yet)")
    status = transport.channel(base.endpoint).unary_unary(
        STATUS.path,
        request_serializer=serialize,
        response_deserializer=rpc.StatusResponse.FromString,
    )
    # No "hasleader": a member without a leader must still answer, and say so.
    metadata = (("token", transport.token),) if transport.token else ()
    try:
        response: rpc.StatusResponse = await status(
            rpc.StatusRequest(), timeout=timeout, metadata=metadata
        )
    except grpc.aio.AioRpcError as err:
        details = (err.details() or "").lower()
        if "refused" in details:
            return replace(base, error="connection refused")
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED or "timed out" in details:
            return replace(base, error=f"no answer within {timeout:g}s")
        return replace(base, error=f"{err.code().name}: {err.details()}")
    return replace(
        base,
        version=response.version,
        leader_id=response.leader,
        raft_term=response.raftTerm,
        raft_index=response.raftIndex,
        revision=response.header.revision,
        db_size=response.dbSize,
        alarms=list(response.errors),
    )

"""``geeh status``: the cluster's members, their health, the raft leader and the revision."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from .candidates import columns
from .common import (
    EXIT_CODES_EPILOG,
    EXIT_ERROR,
    EXIT_OK,
    HelpFormatter,
    Signals,
    add_connection_options,
    connected,
    positive_float,
    print_line,
    unless_stopped,
)

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..cluster import ClusterStatus, MemberStatus

DESCRIPTION = """\
What to run first when an election looks stuck: the etcd cluster as the client sees it.

The first line gives the cluster ID, its revision, the raft term and the raft leader. Then
one line per member (from MemberList): its name, ID, client endpoint, role (leader,
follower, learner), health, etcd version, revision and database size. Each member is asked
for its own Status, with a --timeout of its own, so a member that is down shows as
"down: ..." and one cut off from the quorum as "no leader". "*" marks the member this
client talks to.

Exit status: 0 if every member is healthy, 1 if any is not, 4 if no member answers.
With --json, one JSON object instead.
"""


def add_parsers(commands: Any) -> None:
    """Register ``status`` on the sub-command parser ``commands``."""
    parser = commands.add_parser(
        "status",
        help="the cluster's members, their health, the raft leader and the revision",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=positive_float,
        default=1.0,
        help="how long each member may take to answer before it is shown as down (default: 1)",
    )
    add_connection_options(parser, top_level=False)
    parser.set_defaults(handler=show_status)


async def show_status(args: argparse.Namespace, signals: Signals) -> int:
    from ..cluster import cluster_status

    async with connected(args, signals) as client:
        status = await unless_stopped(cluster_status(client.core.transport, args.timeout), signals)
    if args.json:
        print_line(json.dumps(as_json(status)))
    else:
        for line in text(status):
            print_line(line)
    return EXIT_OK if status.healthy else EXIT_ERROR


def role(status: ClusterStatus, member: MemberStatus) -> str:
    leader = status.leader
    if leader is not None and member.id == leader.id:
        return "leader"
    if member.is_learner:
        return "learner"
    return "follower" if member.answered else "-"


def text(status: ClusterStatus) -> list[str]:
    leader = status.leader
    leader_name = "none" if leader is None else (leader.name or f"{leader.id:x}")
    headline = (
        f"cluster {status.cluster_id:x}  revision {status.revision}  raft term "
        f"{status.raft_term}  raft leader {leader_name}"
    )
    rows = [("", "NAME", "ID", "ENDPOINT", "ROLE", "HEALTH", "VERSION", "REVISION", "DB SIZE")]
    for m in status.members:
        rows.append(
            (
                "*" if m.endpoint == status.using else "",
                m.name or "-",
                f"{m.id:x}",
                m.endpoint or "-",
                role(status, m),
                m.health,
                m.version or "-",
                str(m.revision) if m.answered else "-",
                size(m.db_size) if m.answered else "-",
            )
        )
    lines = [headline, *columns(rows)]
    if not any(m.endpoint == status.using for m in status.members):
        lines.append(f"(this client uses {status.using})")
    return lines


def size(n: int) -> str:
    """A byte count as etcdctl shows it: B, kB, MB, GB (powers of 1000)."""
    value, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def as_json(status: ClusterStatus) -> dict[str, Any]:
    leader = status.leader
    return {
        "cluster_id": f"{status.cluster_id:x}",
        "revision": status.revision,
        "raft_term": status.raft_term,
        "leader": leader.name if leader is not None else None,
        "using": status.using,
        "healthy": status.healthy,
        "members": [
            {
                "name": m.name,
                "id": f"{m.id:x}",
                "endpoint": m.endpoint,
                "client_urls": m.client_urls,
                "role": role(status, m),
                "healthy": m.healthy,
                "health": m.health,
                "version": m.version or None,
                "revision": m.revision if m.answered else None,
                "raft_term": m.raft_term if m.answered else None,
                "raft_index": m.raft_index if m.answered else None,
                "db_size": m.db_size if m.answered else None,
                "using": m.endpoint == status.using,
            }
            for m in status.members
        ],
    }

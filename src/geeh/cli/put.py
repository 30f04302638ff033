"""``geeh put KEY VALUE [--fenced]``: write to etcd, fenced by a leadership if asked."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from .common import (
    EXIT_CODES_EPILOG,
    EXIT_LOST,
    EXIT_OK,
    HelpFormatter,
    Signals,
    add_connection_options,
    as_bytes,
    connected,
    error,
    print_line,
    unless_stopped,
)

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from .. import kv

PUT_DESCRIPTION = """\
Write VALUE to KEY, as `etcdctl put` does, and print OK.

With --fenced, the write is made only while a leadership holds: in the same transaction,
etcd checks that the leader's key still exists and was created at the fencing token. A
command run by `geeh run` finds both in its environment (GEEH_LEADER_KEY and
GEEH_FENCING_TOKEN), so a deposed leader's late write is refused: nothing is written, and
geeh exits with status 3. A key under the leader's own election prefix is refused (a key
there without a lease would block the election).

example, inside a job started by `geeh run`:
  geeh put --fenced reports/last-run "$(date -Is)"
"""


def add_parsers(commands: Any) -> None:
    """Register ``put`` on the sub-command parser ``commands``."""
    put = commands.add_parser(
        "put",
        help="write a key; with --fenced, only while a leadership holds",
        description=PUT_DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    put.add_argument("key", metavar="KEY", help="the key")
    put.add_argument("value", metavar="VALUE", help="the value")
    put.add_argument(
        "--fenced",
        action="store_true",
        help="write only if the leader key still holds the token (default: from "
        "GEEH_LEADER_KEY and GEEH_FENCING_TOKEN)",
    )
    put.add_argument("--leader-key", metavar="K", help="the leader key to check (--fenced)")
    put.add_argument("--token", metavar="N", type=int, help="the fencing token (--fenced)")
    add_connection_options(put, top_level=False)
    put.set_defaults(handler=put_key)


def fence(args: argparse.Namespace) -> tuple[kv.Compare, bytes]:
    """The guard for --fenced, CreateRevision(leader key) == token, and the leader's
    election prefix (the leader key up to its last slash: a candidate key is the prefix
    and a lease ID in hex)."""
    from .. import kv

    key = args.leader_key or os.environ.get("GEEH_LEADER_KEY")
    token = args.token if args.token is not None else os.environ.get("GEEH_FENCING_TOKEN")
    if not key or token is None:
        raise InvalidArgument(
            "--fenced needs the leader key and token: run under `geeh run`, or give "
            "--leader-key and --token"
        )
    try:
        revision = int(token)
    except ValueError:
        raise InvalidArgument(f"fencing token {token!r} is not a number") from None
    leader_key = as_bytes(key)
    slash = leader_key.rfind(b"/")
    if slash <= 0:
        raise InvalidArgument(f"leader key {key!r} is not a candidate key (NAME/LEASE)")
    return kv.create_revision(leader_key) == revision, leader_key[: slash + 1]


async def put_key(args: argparse.Namespace, signals: Signals) -> int:
    from .. import kv

    op = kv.put(as_bytes(args.key), as_bytes(args.value))
    guard = []
    if args.fenced:
        compare, prefix = fence(args)
        kv.refuse_under(prefix, [op])
        guard.append(compare)
    async with connected(args, signals) as client:
        result = await unless_stopped(client.txn(guard, [op]), signals)
    if not result.succeeded:
        error(args.prog, "not leader any more: the leader key no longer holds the token")
        return EXIT_LOST
    print_line("OK")
    return EXIT_OK

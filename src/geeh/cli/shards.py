"""``geeh shards NAME``: every shard's owner and token, and the balance per member."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from .candidates import columns, now, printable
from .common import (
    EXIT_CODES_EPILOG,
    EXIT_OK,
    HelpFormatter,
    Signals,
    add_connection_options,
    as_bytes,
    connected,
    positive_int,
    print_line,
    unless_stopped,
)

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..balance import View
    from ..shards import Shards

DESCRIPTION = """\
Print the shards of NAME (run by Shards.run or ShardedElection): each shard's owner (its
leader's value and key) and fencing token, then each member with how many shards it leads,
and whether the shares are balanced (every shard led by a member, each member within
floor/ceil of shards/members).

--count is the number of shards the members were given; without it, the highest shard seen
in etcd counts (a shard nobody ever campaigned in would be missed).

With --json, one JSON object: {"name", "revision", "time", "count", "balanced", "shards":
[{"shard", "owner": {"key", "value", "token", "lease"} or null}], "members": [{"lease",
"value", "shards"}]}. With --watch, print it again whenever a key under NAME/ changes (a
JSON line each with --json), until SIGINT or SIGTERM (exit 0).
"""


def add_parsers(commands: Any) -> None:
    """Register ``shards`` on the sub-command parser ``commands``."""
    parser = commands.add_parser(
        "shards",
        help="print every shard's owner and token, and the balance per member",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the shards' name")
    parser.add_argument("--count", metavar="N", type=positive_int, help="the number of shards")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("-w", "--watch", action="store_true", help="print again on changes")
    add_connection_options(parser, top_level=False)
    parser.set_defaults(handler=show_shards)


async def show_shards(args: argparse.Namespace, signals: Signals) -> int:
    from ..shards import Shards

    async with connected(args, signals) as client:
        name = as_bytes(args.name)
        if args.count is None:
            # Read with a count no shard reaches, to learn the highest one in use.
            probe = await unless_stopped(Shards(client.core, name, 1 << 30).view(), signals)
            count = max(probe.lines, default=-1) + 1 or 1
        else:
            count = args.count
        shards = Shards(client.core, name, count)
        if not args.watch:
            write(args, await unless_stopped(shards.view(), signals))
            return EXIT_OK
        return await unless_stopped(watch(args, shards), signals)


async def watch(args: argparse.Namespace, shards: Shards) -> int:
    views = shards.follow()
    try:
        async for view in views:
            write(args, view)
            if not args.json:
                print_line("")
    except BrokenPipeError:
        return EXIT_OK  # the reader went away: stop quietly
    finally:
        await views.aclose()
    return EXIT_OK


def write(args: argparse.Namespace, view: View) -> None:
    if args.json:
        print_line(json.dumps(as_json(args.name, view)))
    else:
        print_line(text(args.name, view))


def as_json(name: str, view: View) -> dict[str, Any]:
    held = view.held()
    return {
        "name": name,
        "revision": view.revision,
        "time": now().isoformat(timespec="milliseconds"),
        "count": view.count,
        "balanced": view.balanced(),
        "shards": [
            {
                "shard": shard,
                "owner": None
                if (o := view.owners.get(shard)) is None
                else {
                    "key": o.key.decode(errors="replace"),
                    "value": o.value.decode(errors="replace"),
                    "token": o.token,
                    "lease": o.lease,
                },
            }
            for shard in range(view.count)
        ],
        "members": [
            {
                "lease": lease,
                "value": view.values[lease].decode(errors="replace"),
                "shards": held.get(lease, 0),
            }
            for lease in view.members
        ],
    }


def text(name: str, view: View) -> str:
    rows: list[tuple[str, ...]] = [("SHARD", "OWNER", "TOKEN", "KEY")]
    for shard in range(view.count):
        o = view.owners.get(shard)
        if o is None:
            rows.append((str(shard), "(none)", "-", "-"))
        else:
            value = printable(o.value.decode(errors="replace"), limit=40)
            rows.append(
                (str(shard), value, str(o.token), printable(o.key.decode(errors="replace")))
            )
    held = view.held()
    members: list[tuple[str, ...]] = [("MEMBER", "LEASE", "SHARDS")]
    for lease in view.members:
        value = printable(view.values[lease].decode(errors="replace"), limit=40)
        members.append((value, format(lease, "x"), str(held.get(lease, 0))))
    state = "balanced" if view.balanced() else "not balanced"
    summary = (
        f"{name}: {view.count} shards, {len(view.owners)} led, {len(view.members)} members, "
        f"{state} (revision {view.revision})"
    )
    return "\n".join([*columns(rows), "", *columns(members), "", summary])

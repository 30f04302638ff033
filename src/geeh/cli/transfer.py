"""``geeh transfer NAME --to VALUE|KEY``: hand an election's leadership to a chosen candidate."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import (
    EXIT_CODES_EPILOG,
    EXIT_OK,
    HelpFormatter,
    Signals,
    add_connection_options,
    as_bytes,
    connected,
    positive_float,
    print_line,
    unless_stopped,
)

# Leadership.transfer's default too (geeh.transfer is loaded when the command runs).
DEFAULT_TIMEOUT = 5.0

DESCRIPTION = """\
Hand the leadership of election NAME to the waiting candidate TARGET (its key, or its value
if no other candidate has it), instead of the next in line.

gee-h candidates ahead of TARGET step aside (they join again behind it); once TARGET is next
in line, the leader's key is deleted and TARGET leads. The old leader sees that as the end of
its leadership, as if its key had been deleted (a gee-h leader can hand over by itself,
stopping its work first: Leadership.transfer). Fails, and the leader leads on, if TARGET
leaves, or if a candidate ahead of it does not step aside within --timeout (etcdctl elect
and Go candidates do not).

Prints the old and the new leader's keys (--json: {"election", "from", "to", "token"}).

example, a rolling upgrade:
  geeh transfer jobs --to worker-7-v2
"""


def add_parsers(commands: Any) -> None:
    """Register ``transfer`` on the sub-command parser ``commands``."""
    parser = commands.add_parser(
        "transfer",
        help="hand leadership to a chosen waiting candidate",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="election name")
    parser.add_argument(
        "--to", metavar="TARGET", required=True, help="the candidate's key, or its value"
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        help=f"give up after S seconds (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_connection_options(parser, top_level=False)
    parser.set_defaults(handler=transfer)


async def transfer(args: argparse.Namespace, signals: Signals) -> int:
    from ..transfer import transfer_leader

    async with connected(args, signals) as client:
        name = as_bytes(args.name)
        old, new = await unless_stopped(
            transfer_leader(client.core, name, as_bytes(args.to), args.timeout), signals
        )
        if args.json:
            document = {
                "election": args.name,
                "from": old.key_str,
                "to": new.key_str,
                "token": new.token,
            }
            print_line(json.dumps(document))
        else:
            print_line(f"{old.key_str} -> {new.key_str}")
        return EXIT_OK

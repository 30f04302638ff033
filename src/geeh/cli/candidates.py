"""``geeh candidates NAME``: the whole queue of an election, once or as it changes."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..keys import election_prefix, prefix_end
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
    write_stdout,
)

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..candidates import Candidate, Queue
    from ..leader import Leader

DESCRIPTION = """\
Print every candidate of election NAME in line, leader first:
  POS    how many candidates are ahead (0: the leader)
  KEY    the candidate's key (NAME/ and its lease ID in hex)
  VALUE  its value
  TOKEN  its key's create revision: the fencing token it has or will have as leader
  LEASE  its lease ID, in hex
  TTL    seconds left on its lease (etcd's LeaseTimeToLive; "gone" if it just expired)
A key under NAME/ with no lease is flagged "not a candidate: blocks this election": to the
recipe it is the oldest candidate and leads forever, so no candidate can win until it is
deleted.

With --json, one JSON object: {"election", "revision", "time", "candidates": [{"position",
"key", "value", "token", "lease", "ttl", "note"}, ...]} (lease as a number, ttl null for a
key with no lease; note null, or the flag above).

With --watch, print the queue again whenever it changes. On a terminal the screen is
redrawn, as watch(1) does, every --interval seconds too (TTLs count down); otherwise each
change appends a snapshot (a JSON line with --json). Runs until SIGINT or SIGTERM (exit 0).
"""

CLEAR = "\x1b[H\x1b[2J"
BLOCKS = "not a candidate: blocks this election"


def add_parsers(commands: Any) -> None:
    """Register ``candidates`` on the sub-command parser ``commands``."""
    parser = commands.add_parser(
        "candidates",
        help="print every candidate in line: position, key, value, token, lease, TTL",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="election name")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "-w", "--watch", action="store_true", help="print the queue again as it changes"
    )
    parser.add_argument(
        "-n",
        "--interval",
        metavar="S",
        type=positive_float,
        default=2.0,
        help="with --watch on a terminal: redraw at least every S seconds (default: 2)",
    )
    add_connection_options(parser, top_level=False)
    parser.set_defaults(handler=show_candidates)


async def show_candidates(args: argparse.Namespace, signals: Signals) -> int:
    from ..candidates import follow_candidates, read_candidates

    async with connected(args, signals) as client:
        prefix = election_prefix(as_bytes(args.name))
        end = prefix_end(prefix)
        if not args.watch:
            queue = await unless_stopped(read_candidates(client.core, prefix, end), signals)
            write(args, queue)
            return EXIT_OK
        redraw = sys.stdout.isatty() and not args.json
        follow = follow_candidates(
            client.core, prefix, end, refresh=args.interval if redraw else None
        )
        return await unless_stopped(watch(args, follow, redraw=redraw), signals)


async def watch(args: argparse.Namespace, follow: Any, *, redraw: bool) -> int:
    shown: list[tuple[Any, ...]] | None = None
    try:
        async for queue in follow:
            if redraw:
                header = (
                    f"Every {args.interval:g}s: geeh candidates {args.name}    "
                    f"revision {queue.revision}    {now().strftime('%Y-%m-%d %H:%M:%S')}"
                )
                write_stdout(f"{CLEAR}{header}\n\n".encode())
                write(args, queue)
                continue
            # Appended snapshots only when the line itself changed (not for TTLs counting down).
            same = [(c.key, c.value, c.token, c.lease) for c in queue.candidates]
            if same == shown:
                continue
            shown = same
            if not args.json:
                print_line(
                    f"# {now().isoformat(timespec='milliseconds')} revision {queue.revision}"
                )
            write(args, queue)
            if not args.json:
                print_line("")
    except BrokenPipeError:
        return EXIT_OK  # the reader went away: stop quietly
    finally:
        await follow.aclose()
    return EXIT_OK


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write(args: argparse.Namespace, queue: Queue) -> None:
    if args.json:
        print_line(json.dumps(as_json(args.name, queue)))
    else:
        write_stdout(table(queue.candidates).encode())


def as_json(name: str, queue: Queue) -> dict[str, Any]:
    return {
        "election": name,
        "revision": queue.revision,
        "time": now().isoformat(timespec="milliseconds"),
        "candidates": [
            {
                "position": c.position,
                "key": c.key_str,
                "value": c.value_str,
                "token": c.token,
                "lease": c.lease,
                "ttl": c.ttl,
                "note": note(c),
            }
            for c in queue.candidates
        ],
    }


def table(candidates: list[Candidate]) -> str:
    """The queue as aligned columns, one candidate a line; a note if nobody is in line."""
    rows: list[tuple[str, ...]] = [("POS", "KEY", "VALUE", "TOKEN", "LEASE", "TTL")]
    for c in candidates:
        rows.append(
            (
                str(c.position),
                printable(c.key_str),
                printable(c.value_str, limit=60),
                str(c.token),
                format(c.lease, "x") if c.lease else "-",
                ttl_text(c.ttl),
            )
        )
    lines = columns(rows)
    for i, c in enumerate(candidates, start=1):
        if note(c):
            lines[i] += f"  ({note(c)})"
    if not candidates:
        lines.append("(no candidates)")
    return "\n".join(lines) + "\n"


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def note(leader: Leader) -> str | None:
    """The flag for a key under the prefix that is not a candidate (no lease), else None."""
    return None if leader.lease else BLOCKS


def ttl_text(ttl: int | None) -> str:
    if ttl is None:
        return "-"
    return "gone" if ttl < 0 else f"{ttl}s"


def printable(text: str, limit: int | None = None) -> str:
    """Control characters escaped (a value must not move the cursor); long values cut."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 3] + "..."
    return shown

"""``geeh elect``, ``geeh observe`` (``elect --listen``) and ``geeh leader``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ..errors import ElectionError
from .candidates import note
from .common import (
    CLOSE_AFTER_LOSS_TIMEOUT,
    CLOSE_TIMEOUT,
    EXIT_CODES_EPILOG,
    EXIT_ERROR,
    EXIT_LOST,
    EXIT_OK,
    EXIT_USAGE,
    CandidacyLost,
    ExitBound,
    HelpFormatter,
    Signals,
    add_connection_options,
    as_bytes,
    connected,
    error,
    leader_json,
    positive_int,
    print_line,
    unless_stopped,
    write_leader_lines,
    write_stdout,
)
from .health import add_health_option
from .metrics import add_metrics_option

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..election import Election
    from ..leader import Leader
    from ..leadership import Leadership

DEFAULT_TTL = 10

ELECT_DESCRIPTION = """\
Campaign in election NAME with VALUE, as `etcdctl elect NAME VALUE` does. Once elected,
print the leader key line and the value line (flushed at once), then hold leadership until
SIGINT or SIGTERM: resign and exit 0. If leadership is lost (lease expired or revoked, key
deleted), print one line on stderr and exit 3 at once.

With --listen, observe NAME instead, as `etcdctl elect -l NAME` does (see `geeh observe`).
Interoperates with etcdctl and etcd's Go election recipe: same keys, same queue.
"""

OBSERVE_DESCRIPTION = """\
Print the leader of election NAME and every change after it: the key line and the value
line for each new leader (or new value), exactly as `etcdctl elect -l NAME` does. Runs
until SIGINT or SIGTERM (exit 0).

With --json, print one JSON object per event instead, "no leader" events included:
  {"key": ..., "value": ..., "token": ..., "lease": ..., "time": ...}
(all null but time when there is no leader; token is the fencing token, the leader key's
create revision; time is when the change was seen, ISO 8601 UTC).
"""

LEADER_DESCRIPTION = """\
Print the current leader of election NAME on three lines: its key, its value, and its
fencing token (the key's create revision, which grows with every new leader). If the
election has no leader, exit 1 and print nothing on stdout (with --json: all fields null).
If the oldest key under NAME/ has no lease, it is printed, and flagged on stderr as "not a
candidate: blocks this election": no candidate can win until it is deleted.
"""


def add_parsers(commands: Any) -> None:
    """Register elect, observe and leader on the sub-command parser ``commands``."""
    elect = commands.add_parser(
        "elect",
        help="campaign and hold leadership until interrupted (like `etcdctl elect`)",
        description=ELECT_DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    elect.add_argument("name", metavar="NAME", help="election name (keys live under NAME/)")
    elect.add_argument("value", metavar="VALUE", nargs="?", help="this candidate's value")
    elect.add_argument(
        "-l",
        "--listen",
        action="store_true",
        help="observe the election instead of campaigning (like `etcdctl elect -l`)",
    )
    elect.add_argument("--json", action="store_true", help="with --listen: JSON lines output")
    add_ttl_option(elect)
    add_metrics_option(elect)
    add_health_option(elect)
    add_connection_options(elect, top_level=False)
    elect.set_defaults(handler=elect_or_listen)

    observe = commands.add_parser(
        "observe",
        help="print each leader of an election (like `etcdctl elect -l`)",
        description=OBSERVE_DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    observe.add_argument("name", metavar="NAME", help="election name")
    observe.add_argument("--json", action="store_true", help="one JSON object per event")
    add_metrics_option(observe)
    add_health_option(observe)
    add_connection_options(observe, top_level=False)
    observe.set_defaults(handler=observe_election)

    leader = commands.add_parser(
        "leader",
        help="print the current leader (exit 1 if there is none)",
        description=LEADER_DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    leader.add_argument("name", metavar="NAME", help="election name")
    leader.add_argument("--json", action="store_true", help="print one JSON object instead")
    add_connection_options(leader, top_level=False)
    leader.set_defaults(handler=current_leader)


def add_ttl_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ttl",
        metavar="S",
        type=positive_int,
        default=DEFAULT_TTL,
        help=f"lease TTL in seconds: how soon a crashed leader is replaced (default: "
        f"{DEFAULT_TTL}; etcdctl uses 60; etcd grants at least 2)",
    )


# -- elect -----------------------------------------------------------------------------------


async def elect_or_listen(args: argparse.Namespace, signals: Signals) -> int:
    if args.listen:
        if args.value is not None:
            error(args.prog, "--listen takes no VALUE")
            return EXIT_USAGE
        return await observe_election(args, signals)
    if args.value is None:
        error(args.prog, "VALUE is required (or use --listen to observe)")
        return EXIT_USAGE
    if args.json:
        error(args.prog, "--json goes with --listen")
        return EXIT_USAGE
    return await elect(args, signals)


async def elect(args: argparse.Namespace, signals: Signals) -> int:
    # Once leading, the exit (resign, then close) gets one bound, as in `geeh run`.
    bound = ExitBound()
    async with connected(args, signals, close_within=bound.left) as client:
        election = client.election(as_bytes(args.name))
        # A stop while campaigning cancels the campaign, which withdraws our key and lease.
        leadership = await campaign(args, election, as_bytes(args.value), signals)
        if signals.first is None:
            announce(leadership)
        return await hold(args.prog, leadership, signals, bound)


async def campaign(
    args: argparse.Namespace, election: Election, value: bytes, signals: Signals
) -> Leadership:
    """Campaign until elected; a candidacy that ends without a win raises CandidacyLost."""
    try:
        return await unless_stopped(election.campaign(value, ttl=args.ttl), signals)
    except ElectionError as err:  # our lease expired or our key was deleted while waiting
        raise CandidacyLost(f"campaign in {args.name} ended: {err}") from None


def announce(leadership: Leadership) -> None:
    # If nobody reads our output any more, leadership goes on regardless.
    with contextlib.suppress(BrokenPipeError):
        write_leader_lines(leadership.key, leadership.value)


async def hold(prog: str, leadership: Leadership, signals: Signals, bound: ExitBound) -> int:
    """Lead until a stop signal (resign, 0) or loss (one line on stderr, 3); then begin the
    exit's bound: the close after a loss is short (what is left expires with the lease)."""
    ended = asyncio.get_running_loop().create_future()

    def end(_: object = None) -> None:
        if not ended.done():
            ended.set_result(None)

    leadership.lost.add_callback(end)
    signals.add_callback(end)
    try:
        await ended
    finally:
        leadership.lost.remove_callback(end)
        signals.remove_callback(end)
    if leadership.lost.is_set():
        reason = leadership.lost.reason
        if reason is not None:
            bound.begin(CLOSE_AFTER_LOSS_TIMEOUT)
            error(
                prog,
                f"lost leadership of {leadership.name.decode(errors='replace')}: {reason}",
            )
            return EXIT_LOST
        bound.begin(CLOSE_TIMEOUT)
        return EXIT_OK
    bound.begin(CLOSE_TIMEOUT)
    await resign(prog, leadership, bound)
    return EXIT_OK


async def resign(prog: str, leadership: Leadership, bound: ExitBound) -> None:
    """Resign within what is left of the exit's bound; say so if that fails."""
    try:
        async with asyncio.timeout(bound.left()):
            await leadership.resign()
    except Exception as err:
        error(
            prog,
            f"could not resign ({str(err) or 'timed out'}); the key goes when its lease "
            f"expires (within {leadership.session.ttl}s)",
        )


# -- observe ---------------------------------------------------------------------------------


async def observe_election(args: argparse.Namespace, signals: Signals) -> int:
    async with connected(args, signals) as client:
        election = client.election(as_bytes(args.name))
        return await unless_stopped(follow(election, json_lines=args.json), signals)


async def follow(election: Election, *, json_lines: bool) -> int:
    async with election.observe() as changes:
        async for leader in changes:
            try:
                if json_lines:
                    print_line(leader_json(leader))
                elif leader is not None:  # etcdctl prints nothing while there is no leader
                    write_leader_lines(leader.key, leader.value)
            except BrokenPipeError:
                return EXIT_OK  # the reader went away: stop quietly
    return EXIT_OK


# -- leader ----------------------------------------------------------------------------------


async def current_leader(args: argparse.Namespace, signals: Signals) -> int:
    async with connected(args, signals) as client:
        election = client.election(as_bytes(args.name))
        leader: Leader | None = await unless_stopped(election.leader(), signals)
    if args.json:
        print_line(leader_json(leader))
    elif leader is not None:
        write_stdout(b"%s\n%s\n%d\n" % (leader.key, leader.value, leader.token))
    if leader is not None and note(leader):
        error(args.prog, f"{leader.key_str} has no lease: {note(leader)}")
    elif leader is None and not args.json:
        error(args.prog, f"election {args.name} has no leader")
    return EXIT_OK if leader is not None else EXIT_ERROR

"""``geeh run NAME -- CMD``: run a command only while leader."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from ..errors import GeehError
from .common import (
    CLOSE_TIMEOUT,
    EXIT_CODES_EPILOG,
    EXIT_LOST,
    EXIT_USAGE,
    ExitBound,
    HelpFormatter,
    Interrupted,
    Signals,
    add_connection_options,
    as_bytes,
    connected,
    endpoints_from,
    error,
    positive_float,
)
from .elect import add_ttl_option, campaign, resign
from .health import add_health_option
from .metrics import add_metrics_option
from .proctree import CommandTree

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..leadership import Leadership

# Default --grace, as a share of the TTL: SIGTERM goes this long before the local deadline,
# so it must leave room for a missed keepalive or two (TTL/3 apart) before it fires.
GRACE_SHARE = 0.2
MAX_GRACE_SHARE = 1 / 3
# Once CMD's tree is gone after a loss (or a risk of one), resigning and closing together get
# this long: a single bound, so that a supervisor waiting on geeh is not kept waiting by an
# etcd that does not answer. Our key goes with its lease anyway.
EXIT_AFTER_LOSS = 1.0
# How often the watchdog hears the lease's local deadline (only ever later than it knew).
DEADLINE_FEED = 0.1
# Signals passed on to CMD as they are; a hang-up or quit asks CMD to stop (SIGTERM).
PASSED_ON = (signal.SIGINT, signal.SIGTERM)

RUN_DESCRIPTION = """\
Run CMD only while leader of election NAME:
  - campaign with --value V (default: HOSTNAME:PID); once elected, start CMD;
  - when CMD exits: resign, and exit with CMD's status;
  - when leadership may be lost (no keepalive answered and the lease could expire on etcd
    within --grace seconds): SIGTERM to CMD's tree, SIGKILL at the local deadline, which is
    before etcd can let anyone else lead; exit 3;
  - when leadership is lost outright (our lease revoked or key deleted from outside):
    SIGTERM to CMD's tree, SIGKILL after the lesser of --grace and the safety margin; exit 3;
  - SIGINT and SIGTERM sent to geeh go to CMD's whole tree (SIGHUP and SIGQUIT go as
    SIGTERM), then SIGKILL after --grace; geeh resigns once the tree is gone;
  - whenever CMD exits, whatever it started and left running gets SIGTERM, then SIGKILL
    after --grace; geeh resigns only once nothing of CMD's tree is left;
  - if geeh itself dies (SIGKILL, a crash), CMD's whole tree gets SIGTERM at once, and
    SIGKILL after --grace; if geeh is frozen (SIGSTOP), the tree is stopped by the lease's
    local deadline all the same.

CMD runs in a process group of its own, under a small watchdog process that finds every
process CMD starts, also one that double-forks or calls setsid (Linux). CMD's environment has:
  GEEH_ELECTION        the election name
  GEEH_LEADER_KEY      our candidate key
  GEEH_FENCING_TOKEN   the key's create revision; guard writes with it
  GEEH_LEASE           our lease ID, in hex
  GEEH_ENDPOINTS       the etcd endpoints geeh uses
  GEEH_CACERT, ...     the TLS settings geeh uses (GEEH_CERT, GEEH_KEY, GEEH_SERVER_NAME)

example:
  geeh run nightly-report -- python report.py --all
"""


def add_parsers(commands: Any) -> None:
    """Register ``run`` on the sub-command parser ``commands``."""
    run = commands.add_parser(
        "run",
        help="run CMD while leader; stop it when leadership is lost",
        usage="geeh run [options] NAME -- CMD [ARGS...]",
        description=RUN_DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    run.add_argument("name", metavar="NAME", help="election name")
    run.add_argument("command", metavar="CMD", nargs="*", help="the command and its arguments")
    run.add_argument(
        "--value",
        metavar="V",
        help="this candidate's value (default: HOSTNAME:PID)",
    )
    add_ttl_option(run)
    run.add_argument(
        "--grace",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds CMD gets between SIGTERM and SIGKILL; SIGTERM goes that long before "
        "the lease could expire (default: TTL/5; at most TTL/3)",
    )
    add_metrics_option(run)
    add_health_option(run)
    add_connection_options(run, top_level=False)
    run.set_defaults(handler=run_while_leader)


async def run_while_leader(args: argparse.Namespace, signals: Signals) -> int:
    if not args.command:
        error(args.prog, "no command given: geeh run NAME -- CMD [ARGS...]")
        return EXIT_USAGE
    if args.grace is not None and args.grace > args.ttl * MAX_GRACE_SHARE:
        error(args.prog, f"--grace {args.grace:g} is over TTL/3 ({args.ttl * MAX_GRACE_SHARE:g})")
        return EXIT_USAGE
    value = args.value if args.value is not None else f"{socket.gethostname()}:{os.getpid()}"
    bound = ExitBound()
    try:
        async with connected(args, signals, close_within=bound.left) as client:
            election = client.election(as_bytes(args.name))
            leadership = await campaign(args, election, as_bytes(value), signals)
            if signals.first is not None:  # elected just as a stop arrived
                bound.begin(CLOSE_TIMEOUT)
                await resign(args.prog, leadership, bound)
                raise Interrupted(signals.first)
            return await run_child(args, leadership, signals, bound)
    except Interrupted as stop:
        return 128 + stop.signum  # CMD never ran


async def run_child(
    args: argparse.Namespace, leadership: Leadership, signals: Signals, bound: ExitBound
) -> int:
    """Start CMD now that we lead, and supervise it; resign when its tree is gone."""
    if args.grace is None:
        args.grace = leadership.session.ttl * GRACE_SHARE
    if not leadership.is_leader:  # lost while we got ready: CMD must not start
        error(args.prog, f"lost leadership of {args.name} before CMD started")
        return EXIT_LOST
    try:
        tree = await CommandTree.start(
            args.command, child_environment(args, leadership), args.grace
        )
    except OSError as err:
        error(args.prog, f"cannot run {args.command[0]}: {err.strerror or err}")
        bound.begin(CLOSE_TIMEOUT)
        await resign(args.prog, leadership, bound)
        return 127 if err.errno == errno.ENOENT else 126
    try:
        return await supervise(args, leadership, tree, signals, bound)
    finally:
        if not tree.done:  # we are failing: never leave CMD running unled
            tree.stop(kill_margin(leadership, args.grace))
        tree.close()  # from here on, the watchdog stops the tree by itself if we die
        await tree.wait()


def child_environment(args: argparse.Namespace, leadership: Leadership) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GEEH_ELECTION=args.name,
        GEEH_LEADER_KEY=os.fsdecode(leadership.key),
        GEEH_FENCING_TOKEN=str(leadership.token),
        GEEH_LEASE=format(leadership.lease, "x"),
        GEEH_ENDPOINTS=endpoints_from(args),
    )
    # So that `geeh put --fenced` in CMD reaches etcd as we do, TLS flags included.
    tls = args.connection.tls
    if tls is not None:
        for variable, value in (
            ("GEEH_CACERT", tls.ca),
            ("GEEH_CERT", tls.cert),
            ("GEEH_KEY", tls.key),
            ("GEEH_SERVER_NAME", tls.server_name),
        ):
            if isinstance(value, str):
                env[variable] = value
    return env


async def supervise(
    args: argparse.Namespace,
    leadership: Leadership,
    tree: CommandTree,
    signals: Signals,
    bound: ExitBound,
) -> int:
    """Wait for CMD's tree to end, leadership to be lost, or signals to pass on to CMD."""
    from ..session import now

    gone = asyncio.ensure_future(tree.wait())
    lost = asyncio.ensure_future(leadership.lost.wait())
    risk = asyncio.ensure_future(at_risk(leadership, args.grace))
    feed = asyncio.ensure_future(feed_deadline(leadership, tree))
    stopping = False  # a stop signal came: the tree is being stopped
    try:
        while True:
            received = asyncio.ensure_future(signals.next())
            try:
                await asyncio.wait(
                    {gone, lost, risk, feed, received}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                received.cancel()
            if feed.done():
                feed.result()  # it runs until cancelled: this raises its error
            if gone.done():  # CMD exited, and the rest of its tree is gone too
                if leadership.is_leader and now() < leadership.session.deadline:
                    bound.begin(CLOSE_TIMEOUT)
                    await resign(args.prog, leadership, bound)
                    return gone.result()
                # Also when the watchdog stopped the tree by the deadline while we were frozen.
                bound.begin(EXIT_AFTER_LOSS)
                reason = leadership.lost.reason if leadership.lost.is_set() else "lease expiry"
                error(
                    args.prog,
                    f"lost leadership of {args.name}: {reason or 'lease expiry'}; "
                    f"{args.command[0]} (pid {tree.pid}) was stopped by then",
                )
                return EXIT_LOST
            if risk.done() and not lost.done():
                error(
                    args.prog,
                    f"leadership of {args.name} at risk: no keepalive answered, the lease "
                    f"may expire in {args.grace:g}s; stopping {args.command[0]} (pid {tree.pid})",
                )
                # SIGKILL at the local deadline: before etcd can expire the lease.
                tree.stop(max(0.0, leadership.session.deadline - now()))
                await gone
                bound.begin(EXIT_AFTER_LOSS)
                with contextlib.suppress(GeehError, TimeoutError):  # it expires anyway
                    async with asyncio.timeout(bound.left()):
                        await leadership.resign()
                return EXIT_LOST
            if lost.done():
                error(
                    args.prog,
                    f"lost leadership of {args.name}: {leadership.lost.reason}; "
                    f"stopping {args.command[0]} (pid {tree.pid})",
                )
                tree.stop(kill_margin(leadership, args.grace))
                await gone
                bound.begin(EXIT_AFTER_LOSS)
                return EXIT_LOST
            if received.done() and not received.cancelled():
                signum = received.result()
                signum = signum if signum in PASSED_ON else signal.SIGTERM
                if stopping:
                    tree.signal(signum)  # a second Ctrl-C reaches CMD too
                else:  # to the whole tree; SIGKILL after --grace: the exit is bounded
                    tree.stop(args.grace, signum)
                    stopping = True
    finally:
        for task in (gone, lost, risk, feed):
            task.cancel()


async def feed_deadline(leadership: Leadership, tree: CommandTree) -> None:
    """Keep the watchdog told of the local deadline: it stops the tree by then even if we
    cannot (frozen by SIGSTOP, say)."""
    told = None
    while True:
        deadline = leadership.session.deadline
        if deadline != told:
            tree.set_deadline(deadline)
            told = deadline
        await asyncio.sleep(DEADLINE_FEED)


async def at_risk(leadership: Leadership, grace: float) -> None:
    """Return when the local deadline is ``grace`` seconds away and no keepalive moved it."""
    from ..session import now

    while True:
        left = leadership.session.deadline - grace - now()
        if left <= 0:
            return
        await asyncio.sleep(left)


def kill_margin(leadership: Leadership, grace: float) -> float:
    """After an outright loss, another leader may exist already: not more than the margin."""
    from ..session import safety_margin

    return min(grace, safety_margin(leadership.session.ttl))

"""``geeh run NAME -- CMD``: run a command only while leader."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from ..errors import GeehError
from .common import (
    CLOSE_AFTER_LOSS_TIMEOUT,
    EXIT_CODES_EPILOG,
    EXIT_LOST,
    EXIT_USAGE,
    HelpFormatter,
    Interrupted,
    Signals,
    add_connection_options,
    as_bytes,
    close_client,
    connected,
    endpoints_from,
    error,
    positive_float,
)
from .elect import add_ttl_option, campaign, resign
from .metrics import add_metrics_option

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..leadership import Leadership

# Default --grace, as a share of the TTL: SIGTERM goes this long before the local deadline,
# so it must leave room for a missed keepalive or two (TTL/3 apart) before it fires.
GRACE_SHARE = 0.2
MAX_GRACE_SHARE = 1 / 3

RUN_DESCRIPTION = """\
Run CMD only while leader of election NAME:
  - campaign with VALUE; once elected, start CMD;
  - when CMD exits: resign, and exit with CMD's status;
  - when leadership may be lost (no keepalive answered and the lease could expire on etcd
    within --grace seconds): SIGTERM to CMD, then SIGKILL at the local deadline, which is
    before etcd can let anyone else lead; exit 3;
  - when leadership is lost outright (our lease revoked or key deleted from outside):
    SIGTERM to CMD, SIGKILL after the lesser of --grace and the safety margin; exit 3;
  - SIGINT and SIGTERM sent to geeh go to CMD first; geeh resigns once CMD has exited.

CMD runs in a process group of its own, so a terminal's Ctrl-C reaches it once (through
geeh) and a loss of leadership stops whatever CMD started too. CMD's environment has:
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
    try:
        async with connected(args, signals) as client:
            election = client.election(as_bytes(args.name))
            leadership = await campaign(args, election, as_bytes(value), signals)
            if signals.first is not None:  # elected just as a stop arrived
                await resign(args.prog, leadership)
                raise Interrupted(signals.first)
            status = await run_child(args, leadership, signals)
            if status == EXIT_LOST:
                await close_client(client, CLOSE_AFTER_LOSS_TIMEOUT)
            return status
    except Interrupted as stop:
        return 128 + stop.signum  # CMD never ran


async def run_child(args: argparse.Namespace, leadership: Leadership, signals: Signals) -> int:
    """Start CMD now that we lead, and supervise it; resign when it is done."""
    if args.grace is None:
        args.grace = leadership.session.ttl * GRACE_SHARE
    if not leadership.is_leader:  # lost while we got ready: CMD must not start
        error(args.prog, f"lost leadership of {args.name} before CMD started")
        return EXIT_LOST
    try:
        child = await asyncio.create_subprocess_exec(
            *args.command, env=child_environment(args, leadership), process_group=0
        )
    except OSError as err:
        error(args.prog, f"cannot run {args.command[0]}: {err.strerror or err}")
        await resign(args.prog, leadership)
        return 127 if isinstance(err, FileNotFoundError) else 126
    try:
        return await supervise(args, leadership, child, signals)
    finally:
        if child.returncode is None:  # we are failing: never leave CMD running unled
            await stop_child(child, kill_margin(leadership, args.grace))


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
    child: asyncio.subprocess.Process,
    signals: Signals,
) -> int:
    """Wait for CMD to exit, leadership to be lost, or signals to pass on to CMD."""
    from ..session import now

    exited = asyncio.ensure_future(child.wait())
    lost = asyncio.ensure_future(leadership.lost.wait())
    risk = asyncio.ensure_future(at_risk(leadership, args.grace))
    try:
        while True:
            received = asyncio.ensure_future(signals.next())
            try:
                await asyncio.wait(
                    {exited, lost, risk, received}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                received.cancel()
            if exited.done():
                status = exit_status(exited.result())
                if not leadership.lost.is_set():
                    await resign(args.prog, leadership)
                return status
            if risk.done() and not lost.done():
                error(
                    args.prog,
                    f"leadership of {args.name} at risk: no keepalive answered, the lease "
                    f"may expire in {args.grace:g}s; stopping {args.command[0]} (pid {child.pid})",
                )
                # SIGKILL at the local deadline: before etcd can expire the lease.
                await stop_child(child, max(0.0, leadership.session.deadline - now()))
                with contextlib.suppress(GeehError):  # it expires by itself if this fails
                    await leadership.resign(timeout=1.0)
                return EXIT_LOST
            if lost.done():
                error(
                    args.prog,
                    f"lost leadership of {args.name}: {leadership.lost.reason}; "
                    f"stopping {args.command[0]} (pid {child.pid})",
                )
                await stop_child(child, kill_margin(leadership, args.grace))
                return EXIT_LOST
            if received.done() and not received.cancelled():
                signal_group(child, received.result())
    finally:
        exited.cancel()
        lost.cancel()
        risk.cancel()


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


def exit_status(returncode: int) -> int:
    """A shell's view of a child's status: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def signal_group(child: asyncio.subprocess.Process, signum: int) -> None:
    # CMD leads its own process group (process_group=0): signal everything it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


async def stop_child(child: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM CMD's process group, then SIGKILL whatever is left after ``grace`` seconds."""
    signal_group(child, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(child.wait(), grace)
    # Also after CMD itself exited: nothing it started may outlive our leadership.
    signal_group(child, signal.SIGKILL)
    await child.wait()

"""What every ``geeh`` command shares: exit codes, endpoints, signals, errors and output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import EtcdUnavailable, GeehError, InvalidArgument
from .connection import CONNECTION_ENV_EPILOG, Connection, connection_from
from .connection import add_connection_options as add_connection_options  # re-exported
from .connection import endpoints_from as endpoints_from
from .connection import positive_float as positive_float
from .health import serving_health
from .metrics import serving_metrics

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..client import Client
    from ..leader import Leader

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1  # also: `geeh leader` found no leader
EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_UNAVAILABLE = 4

# How long shutting down (resign, revoke) may take before we give up on an unreachable etcd:
# what we leave behind then expires with its lease anyway. After a loss, exit at once.
CLOSE_TIMEOUT = 5.0
CLOSE_AFTER_LOSS_TIMEOUT = 0.5

EXIT_CODES_EPILOG = (
    """\
exit status:
  0    success; also a command stopped by SIGINT, SIGTERM, SIGHUP or SIGQUIT after
       cleaning up
  1    general error; `geeh leader`: the election has no leader
  2    usage error
  3    leadership lost, or the candidacy before it: our lease expired or was
       revoked, or our key deleted (`elect`, `run`)
  4    etcd unavailable: not reachable within --dial-timeout, or lost for longer
       than a request may take
  `geeh run` exits with CMD's status (128+N if CMD was killed by signal N), or
  128+N if signal N stopped it before CMD started. `geeh demo` and `geeh etcd`:
  see their --help.

"""
    + CONNECTION_ENV_EPILOG
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the hand-made layout of descriptions and epilogs; align option help wider."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def configure_logging(verbosity: int) -> None:
    """Log only with -v: commands report what matters themselves, in one line.

    Without -v, gee-h's warnings (such as "leadership lost", which the command reports
    itself) and asyncio's complaints about gRPC stream tasks abandoned when a connection
    is torn down, are not shown.
    """
    if verbosity <= 0:
        for name in ("geeh", "asyncio"):
            logger = logging.getLogger(name)
            logger.addHandler(logging.NullHandler())
            logger.propagate = False
        return
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 1 else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def error(prog: str, message: object) -> None:
    """One line on stderr, prefixed with the command's name."""
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def as_bytes(text: str) -> bytes:
    """A command-line argument as the bytes the user typed (non-UTF-8 bytes survive)."""
    return os.fsencode(text)


def write_leader_lines(key: bytes, value: bytes) -> None:
    """The key line and the value line, byte for byte as `etcdctl elect` prints them."""
    write_stdout(key + b"\n" + value + b"\n")


def write_stdout(data: bytes) -> None:
    """Write and flush; BrokenPipeError if the reader has gone (e.g. `| head -2`)."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null, or Python complains again when it flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise


def leader_json(leader: Leader | None) -> str:
    """One JSON object for a leader (or no leader, all fields null), with the time seen."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    if leader is None:
        record: dict[str, Any] = {"key": None, "value": None, "token": None, "lease": None}
    else:
        record = {
            "key": leader.key_str,
            "value": leader.value_str,
            "token": leader.token,
            "lease": leader.lease,
        }
    record["time"] = now
    return json.dumps(record)


def print_line(text: str) -> None:
    write_stdout(text.encode() + b"\n")


# -- signals ---------------------------------------------------------------------------------


class CandidacyLost(Exception):
    """A campaign ended without a win: our lease expired or our key was deleted."""


class Interrupted(Exception):
    """A stop signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT) arrived while waiting for something."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """Stop signals, delivered to asyncio code instead of killing the process.

    SIGINT and SIGTERM; SIGHUP (a closed terminal or ssh session) and SIGQUIT too, handled
    like SIGTERM: a command stopped by any of them cleans up (resigns) before it exits.

    ``first`` is the first signal received (or None); callbacks added with ``add_callback``
    run at it; ``next()`` returns each signal in turn (for forwarding them to a child).
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

    def __init__(self) -> None:
        self.first: int | None = None
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._callbacks: list[Callable[[], object]] = []
        self._loop = asyncio.get_running_loop()
        for signum in self.HANDLED:
            self._loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        if self.first is None:
            self.first = signum
            for callback in self._callbacks:
                callback()
        self._queue.put_nowait(signum)

    def add_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` at the first stop signal (at once if it came already).

        Called in the signal handler's own loop turn: a resign starts with no task wake-up
        in between.
        """
        if self.first is not None:
            callback()
        else:
            self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], object]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    async def next(self) -> int:
        return await self._queue.get()

    def close(self) -> None:
        # Back to raising KeyboardInterrupt / terminating, for whatever runs after the loop.
        for signum in self.HANDLED:
            self._loop.remove_signal_handler(signum)


async def unless_stopped(aw: Awaitable[T], signals: Signals) -> T:
    """Await ``aw``; if a stop signal comes first, cancel it and raise Interrupted."""
    if signals.first is not None:
        if asyncio.iscoroutine(aw):
            aw.close()
        raise Interrupted(signals.first)
    # Awaited in this task, not a task of its own: its result (a won campaign, say) reaches
    # us with no extra loop turn. A stop signal cancels this task; ``aw`` cleans up (e.g. a
    # campaign withdraws its key) as the cancellation passes through it.
    current = asyncio.current_task()
    assert current is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        current.cancel()

    signals.add_callback(stop)
    try:
        return await aw
    except asyncio.CancelledError:
        if stopped and current.uncancel() == 0 and signals.first is not None:
            raise Interrupted(signals.first) from None
        raise
    finally:
        signals.remove_callback(stop)


class ExitBound:
    """One time limit on everything a command does once it is exiting: resign, then close.

    Each step waits only for what is left (``left()``), so that a supervisor waiting on geeh
    is not kept waiting by an etcd that does not answer: the bounds do not stack. Until
    ``begin()``, ``left()`` is the whole close bound.
    """

    def __init__(self) -> None:
        self._until: float | None = None

    def begin(self, seconds: float) -> None:
        """Start the bound (the first call counts; later ones change nothing)."""
        if self._until is None:
            self._until = time.monotonic() + seconds

    def left(self) -> float:
        if self._until is None:
            return CLOSE_TIMEOUT
        return max(0.0, self._until - time.monotonic())


@contextlib.asynccontextmanager
async def connected(
    args: argparse.Namespace,
    signals: Signals,
    *,
    close_within: Callable[[], float] = lambda: CLOSE_TIMEOUT,
) -> AsyncIterator[Client]:
    """A connected Client for the command's endpoints; closed (bounded in time) on exit.

    ``close_within()`` is asked at exit how long the close may take.

    ``args.connection`` holds the settings, resolved by :func:`resolve_connection` before
    the event loop started. With --metrics-addr, its metrics are served until then; with
    --health-addr, its probes (/healthz, /leader).
    """
    from ..client import Client

    async with serving_metrics(args) as listeners:
        settings: Connection = args.connection
        client = Client(
            settings.endpoints,
            dial_timeout=args.dial_timeout,
            discover=settings.discover,
            username=settings.username,
            password=settings.password,
            tls=settings.tls,
            listeners=listeners,
        )
        try:
            async with serving_health(args, client):  # bound first: a port in use fails fast
                await unless_stopped(client.connect(), signals)
                yield client
        finally:
            await close_client(client, close_within())


async def close_client(client: Client, timeout: float) -> None:
    """Close (resign, revoke) within ``timeout``: etcd may be gone by now. Idempotent."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), timeout)


def resolve_connection(args: argparse.Namespace) -> int | None:
    """Resolve the connection settings of a command that connects into ``args.connection``.

    Done before the event loop starts: asking for a password blocks, and Ctrl-C must stop
    it. Returns an exit status if the settings are wrong, after one line on stderr.
    """
    if not getattr(args, "connects", False):
        return None
    try:
        args.connection = connection_from(args, lambda text: error(args.prog, text))
    except InvalidArgument as err:
        return report(args.prog, err)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 128 + signal.SIGINT
    return None


def run_command(
    prog: str,
    command: Callable[[argparse.Namespace, Signals], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
) -> int:
    """Run an asyncio command; map gee-h's exceptions to one line on stderr and an exit code."""

    async def guarded() -> int:
        signals = Signals()
        try:
            return await command(args, signals)
        except Interrupted:
            return EXIT_OK  # stopped on request, after cleaning up
        finally:
            signals.close()

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:  # before the handlers were installed
        return 128 + signal.SIGINT
    except Exception as err:  # the one place that turns errors into exit codes
        return report(prog, err)


def report(prog: str, err: BaseException) -> int:
    """One line on stderr for an error, and the exit status it calls for."""
    if isinstance(err, EtcdUnavailable):
        error(prog, err)
        return EXIT_UNAVAILABLE
    if isinstance(err, CandidacyLost):
        error(prog, err)
        return EXIT_LOST
    if isinstance(err, InvalidArgument):
        error(prog, err)
        return EXIT_USAGE
    if isinstance(err, GeehError):
        error(prog, err)
        return EXIT_ERROR
    if os.environ.get("GEEH_DEBUG"):
        raise err
    error(prog, f"unexpected error: {type(err).__name__}: {err} (GEEH_DEBUG=1 for a traceback)")
    return EXIT_ERROR

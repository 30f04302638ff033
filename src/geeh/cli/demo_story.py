"""The story ``geeh demo`` runs and tells: candidates, an observer, three failovers, a summary.

:class:`Demo` starts the candidates (each a ``geeh elect`` process, so that it can be
SIGKILLed), observes the election in this process, takes the demo through its steps
(graceful resign, crashed leader, crashed etcd member) and times each failover. Every line it
prints is stamped with the wall-clock time (:func:`say`). The candidate processes themselves
are in demo_candidates.py.
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import GeehError
from .common import EXIT_ERROR, EXIT_OK, Interrupted, Signals, error, unless_stopped, write_stdout
from .demo_candidates import STOP_GRACE, Candidate, stop_all

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..election import Election
    from ..leader import Leader
    from ..testing import LocalEtcdCluster

# A bound on waits, so that a broken setup ends the demo instead of hanging it.
START_TIMEOUT = 30.0

TRY_IT = """
try it yourself, in a few terminals:
  geeh etcd --members 3               # prints the endpoints; export GEEH_ENDPOINTS=<them>
  geeh observe my-election            # prints each leader
  geeh elect my-election alice        # leads until Ctrl-C; run another with bob
  geeh run my-election -- CMD ARGS    # CMD runs only while leader"""


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
        candidate = await Candidate.start(name, command, say)
        self.candidates[name] = candidate
        say(f"{name} started (pid {candidate.process.pid})")
        return candidate

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
        await stop_all(list(self.candidates.values()), say)

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

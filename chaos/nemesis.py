"""The nemesis: a schedule of faults drawn from the seed, and how each is injected and healed.

Two lanes run side by side, each one fault at a time, so never more than two faults are
active at once: the etcd lane (members killed and restarted, frozen past the TTL, two of
three frozen; a single frozen member is a follower unless ``freeze_raft_leader``) and the
workers lane (the leading worker frozen past its TTL, workers killed and restarted, links
between a worker and a member black-holed, a worker cut off from every member). A third
lane acts on the process-level workers (``geeh run``) of the leader: geeh itself SIGKILLed,
frozen past the TTL (SIGSTOP), hung up on (SIGHUP, a closed terminal), or its CMD SIGKILLed.
A fourth lane, on an etcd of its own with auth (chaos/rbac.py), revokes read on one election
while its other elections are observed, and restores it.
Each lane goes through its kinds in a shuffled order, all of them before any repeats. Targets named
by role (the raft leader, the leading worker) are looked up when the fault starts;
everything else, times included, comes from the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .cluster import LocalEtcdCluster, TcpProxy
from .history import Log
from .proc import Child
from .rbac import RbacLane

ETCD_KINDS = ("kill-member", "kill-raft-leader", "stop-member", "quorum-loss")
WORKER_KINDS = ("pause-leader", "kill-worker", "blackhole-link", "partition-worker")
RUN_KINDS = ("kill-geeh", "freeze-geeh", "hup-geeh", "kill-cmd")
RBAC_KINDS = ("revoke-read",)
LANES = (("etcd", ETCD_KINDS), ("workers", WORKER_KINDS), ("run", RUN_KINDS), ("rbac", RBAC_KINDS))


@dataclass(frozen=True)
class Fault:
    lane: str
    at: float  # seconds after the fault phase began
    kind: str
    hold: float  # how long it lasts before it is healed
    picks: tuple[float, float, float]  # draws in [0, 1) that choose its targets


def _hold(rng: random.Random, kind: str, ttl: int) -> float:
    if kind in ("kill-member", "kill-raft-leader"):
        return rng.uniform(1.0, 5.0)
    if kind in ("kill-worker", "kill-geeh"):
        return rng.uniform(0.2, 3.0)
    if kind in ("hup-geeh", "kill-cmd"):  # geeh exits by itself and is started again
        return rng.uniform(0.2, 1.0)
    if kind == "revoke-read":
        return rng.uniform(6.0, 9.0)  # longer than the checker's allowed lag
    if kind == "blackhole-link":
        return rng.uniform(1.0, ttl + 3.0)
    return rng.uniform(ttl + 0.5, ttl + 3.0)  # past the TTL: frozen or cut off


def schedule(seed: int, seconds: float, ttl: int) -> list[Fault]:
    """The faults of a run, in start order: the same seed gives the same schedule.

    Each lane draws from its own generator, so a shorter run's schedule is the start of a
    longer one's with the same seed.
    """
    faults = []
    for lane, kinds in LANES:
        rng = random.Random(f"{seed}/{lane}")
        at = rng.uniform(2.0, 4.0)
        cycle: list[str] = []
        while at < seconds:
            if not cycle:
                cycle = rng.sample(kinds, len(kinds))
            kind = cycle.pop()
            hold = _hold(rng, kind, ttl)
            picks = (rng.random(), rng.random(), rng.random())
            faults.append(Fault(lane, round(at, 3), kind, round(hold, 3), picks))
            # A `geeh run` worker killed needs a TTL before anyone leads again: wait longer.
            at += hold + rng.uniform(0.5, 4.0) + (ttl if lane == "run" else 0)
    return sorted(faults, key=lambda f: f.at)


class Rig(Protocol):
    """What the nemesis acts on (the controller provides it)."""

    cluster: LocalEtcdCluster
    workers: list[Child]
    proxies: list[list[TcpProxy]]  # [worker][member]
    members_down: set[int]  # members the nemesis keeps down on purpose
    runners: list[Child]  # the process-level workers: `geeh run` processes
    rbac: RbacLane | None

    async def leading_worker(self) -> int | None: ...

    async def leading_runner(self) -> int | None: ...

    def cmd_pid(self, runner: int) -> int | None:
        """The pid of the runner's CMD, as its latest heartbeat says."""
        ...

    def start_worker(self, i: int) -> None: ...

    def start_runner(self, i: int) -> None: ...


Heal = Callable[[], Awaitable[None]]


async def _retry(heal: Heal) -> None:
    """Heal, trying again twice: a member that fails to restart once may start next time."""
    for attempt in range(3):
        try:
            await heal()
            return
        except Exception:
            if attempt == 2:
                raise
            await asyncio.sleep(1.0)


class Nemesis:
    def __init__(self, rig: Rig, log: Log, *, freeze_raft_leader: bool = False) -> None:
        self.rig = rig
        self.log = log
        self.freeze_raft_leader = freeze_raft_leader

    async def run(self, faults: list[Fault], began: float) -> None:
        """Run both lanes until each has injected and healed all its faults."""
        lanes = [[f for f in faults if f.lane == lane] for lane, _ in LANES]
        async with asyncio.TaskGroup() as group:
            for lane in lanes:
                group.create_task(self._lane(lane, began))

    async def _lane(self, faults: list[Fault], began: float) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, began + fault.at - time.monotonic()))
            await self.inject(fault)

    async def inject(self, fault: Fault) -> None:
        try:
            target, heal = await getattr(self, "_" + fault.kind.replace("-", "_"))(fault)
        except Exception as err:  # e.g. its member was down for another reason: log, go on
            self.log.write("fault", kind=fault.kind, lane=fault.lane, target=repr(err),
                           at=fault.at, skipped=True)  # fmt: skip
            return
        start = time.monotonic()  # injected by now (finding the target may take a while)
        try:
            if heal is not None:
                await asyncio.sleep(fault.hold)
        finally:
            if heal is not None:
                await _retry(heal)
            self.log.write(
                "fault",
                kind=fault.kind,
                lane=fault.lane,
                target=target,
                start=start,
                end=time.monotonic(),
                at=fault.at,
                skipped=heal is None,
            )

    # -- etcd lane ----------------------------------------------------------------------

    async def _raft_leader(self, pick: float) -> tuple[int, str]:
        leader = await asyncio.to_thread(self.rig.cluster.leader_index)
        if leader is None:
            return int(pick * 3), "m{} (no raft leader found)"
        return leader, "m{} (raft leader)"

    async def _kill(self, i: int, label: str) -> tuple[str, Heal]:
        cluster = self.rig.cluster
        self.rig.members_down.add(i)
        await asyncio.to_thread(cluster.kill, i)

        async def heal() -> None:
            await asyncio.to_thread(cluster.restart, i)
            self.rig.members_down.discard(i)

        return label.format(i), heal

    async def _kill_member(self, f: Fault) -> tuple[str, Heal]:
        return await self._kill(int(f.picks[0] * 3), "m{}")

    async def _kill_raft_leader(self, f: Fault) -> tuple[str, Heal]:
        return await self._kill(*await self._raft_leader(f.picks[0]))

    async def _freeze(self, members: list[int], label: str) -> tuple[str, Heal]:
        cluster = self.rig.cluster
        for i in members:
            await asyncio.to_thread(cluster.stop, i)

        async def heal() -> None:
            for i in members:
                await asyncio.to_thread(cluster.resume, i)

        return label, heal

    async def _stop_member(self, f: Fault) -> tuple[str, Heal]:
        leader, label = await self._raft_leader(f.picks[1])
        if not (self.freeze_raft_leader and f.picks[0] < 0.5):
            # A follower: a raft leader frozen past the TTL revokes live leases when it
            # resumes (etcd-io/etcd#15247), which only --freeze-raft-leader asks for.
            i, label = [m for m in range(3) if m != leader][int(f.picks[1] * 2)], "m{} (follower)"
        else:
            i = leader
        return await self._freeze([i], label.format(i))

    async def _quorum_loss(self, f: Fault) -> tuple[str, Heal]:
        i, label = await self._raft_leader(f.picks[0])
        other = (i + 1 + int(f.picks[1] * 2)) % 3
        return await self._freeze([i, other], f"{label.format(i)} and m{other}")

    # -- workers lane ---------------------------------------------------------------------

    async def _worker(self, pick: float, other: float, leader_first: float) -> tuple[int, str]:
        if pick < leader_first:
            leader = await self.rig.leading_worker()
            if leader is not None:
                return leader, f"w{leader} (leader)"
        i = int(other * len(self.rig.workers))
        return i, f"w{i}"

    async def _pause_leader(self, f: Fault) -> tuple[str, Heal | None]:
        leader = await self.rig.leading_worker()
        if leader is None:
            return "no leader", None
        worker = self.rig.workers[leader]
        worker.signal(signal.SIGSTOP)

        async def heal() -> None:
            worker.signal(signal.SIGCONT)

        return f"w{leader} (leader)", heal

    async def _kill_worker(self, f: Fault) -> tuple[str, Heal]:
        i, label = await self._worker(f.picks[0], f.picks[1], 0.7)
        self.rig.workers[i].kill()

        async def heal() -> None:
            self.rig.start_worker(i)

        return label, heal

    def _blackhole(self, proxies: list[TcpProxy]) -> Heal:
        for proxy in proxies:
            proxy.blackhole()

        async def heal() -> None:
            for proxy in proxies:
                proxy.pass_through()

        return heal

    async def _blackhole_link(self, f: Fault) -> tuple[str, Heal]:
        i, label = await self._worker(f.picks[0], f.picks[1], 0.6)
        m = int(f.picks[2] * 3)
        return f"{label} <-> m{m}", self._blackhole([self.rig.proxies[i][m]])

    async def _partition_worker(self, f: Fault) -> tuple[str, Heal]:
        i, label = await self._worker(f.picks[0], f.picks[1], 0.8)
        return f"{label} <-> all members", self._blackhole(self.rig.proxies[i])

    # -- run lane: `geeh run` itself, and its CMD ------------------------------------------

    async def _leading_runner(self) -> tuple[int, Child] | None:
        i = await self.rig.leading_runner()
        return None if i is None else (i, self.rig.runners[i])

    async def _kill_geeh(self, f: Fault) -> tuple[str, Heal | None]:
        leader = await self._leading_runner()
        if leader is None:
            return "no leading geeh run", None
        i, runner = leader
        runner.kill()

        async def heal() -> None:
            self.rig.start_runner(i)

        return f"r{i} (leader)", heal

    async def _freeze_geeh(self, f: Fault) -> tuple[str, Heal | None]:
        leader = await self._leading_runner()
        if leader is None:
            return "no leading geeh run", None
        i, runner = leader
        runner.signal(signal.SIGSTOP)

        async def heal() -> None:
            runner.signal(signal.SIGCONT)

        return f"r{i} (leader)", heal

    async def _hup_geeh(self, f: Fault) -> tuple[str, Heal | None]:
        leader = await self._leading_runner()
        if leader is None:
            return "no leading geeh run", None
        i, runner = leader
        runner.signal(signal.SIGHUP)  # it stops CMD's tree, resigns, exits; started again
        return f"r{i} (leader)", _nothing

    async def _kill_cmd(self, f: Fault) -> tuple[str, Heal | None]:
        leader = await self._leading_runner()
        pid = None if leader is None else self.rig.cmd_pid(leader[0])
        if leader is None or pid is None:
            return "no leading geeh run", None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return f"r{leader[0]}'s CMD (pid {pid})", _nothing

    # -- rbac lane ------------------------------------------------------------------------

    async def _revoke_read(self, f: Fault) -> tuple[str, Heal]:
        lane = self.rig.rbac
        if lane is None:
            raise RuntimeError("no rbac lane in this run")
        await asyncio.to_thread(lane.revoke)

        async def heal() -> None:
            await asyncio.to_thread(lane.restore)

        return "read on chaos-rbac-0", heal


async def _nothing() -> None:
    """The heal of a fault that heals itself."""

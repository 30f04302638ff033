"""Chaos, sharded mode: members share shards under join, leave, kill, pause and etcd faults.

``python -m chaos --sharded`` runs members (chaos/shard_worker.py) of one set of shards on a
3-member etcd cluster. Two lanes of faults, drawn from the seed: the members lane joins a new
member, makes one leave gracefully (SIGTERM), kills one (SIGKILL, restarted after a while)
or pauses one past its TTL; the etcd lane kills or freezes an etcd member (the nemesis's own
etcd faults). After the last fault the controller follows the shards until they are balanced
over the running members and records when (``balance.json``). The run directory then holds
what chaos/shard_checker.py needs: ``s<i>.jsonl`` histories, ``faults.jsonl``, ``etcd.jsonl``,
``balance.json``, ``leftovers.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import geeh

from . import history
from .cluster import LocalEtcdCluster, TcpProxy, find_etcdctl
from .controller import Options
from .history import Log
from .nemesis import Fault, Nemesis
from .proc import Child, stop_all
from .rbac import RbacLane

NAME = "chaos-shards"
COUNT = 16
INITIAL = 3
SLOTS = 6
MEMBER_KINDS = ("join", "leave", "kill", "pause")
ETCD_KINDS = ("kill-member", "stop-member", "kill-raft-leader")


def schedule(seed: int, seconds: float, ttl: int) -> list[Fault]:
    """The faults of a sharded run, in start order; the same seed gives the same schedule."""
    faults = []
    for lane, kinds in (("members", MEMBER_KINDS), ("etcd", ETCD_KINDS)):
        rng = random.Random(f"{seed}/sharded/{lane}")
        at = rng.uniform(2.0, 4.0)
        cycle: list[str] = []
        while at < seconds:
            if not cycle:
                cycle = rng.sample(kinds, len(kinds))
            kind = cycle.pop()
            if kind in ("pause", "stop-member"):
                hold = rng.uniform(ttl + 0.5, ttl + 3.0)
            else:
                hold = rng.uniform(1.0, 4.0)
            picks = (rng.random(), rng.random(), rng.random())
            faults.append(Fault(lane, round(at, 3), kind, round(hold, 3), picks))
            at += hold + rng.uniform(1.0, 4.0)
    return sorted(faults, key=lambda f: f.at)


class ShardedRun:
    """One sharded run; also the rig the nemesis's etcd faults act on."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.dir = opts.rundir
        self.cluster = LocalEtcdCluster(3, etcd_bin=opts.etcd, log_dir=str(self.dir))
        self.workers: list[Child] = []  # the member slots (the rig's name for them)
        self.proxies: list[list[TcpProxy]] = []
        self.members_down: set[int] = set()
        self.log = Log(self.dir / "controller.jsonl")
        self.faults = Log(self.dir / "faults.jsonl")
        self.client: geeh.Client | None = None
        # The plain mode's `geeh run` and rbac lanes are not used here.
        self.runners: list[Child] = []
        self.rbac: RbacLane | None = None

    async def leading_worker(self) -> int | None:
        return None  # the worker faults of the plain mode are not used here

    async def leading_runner(self) -> int | None:
        return None

    def cmd_pid(self, runner: int) -> int | None:
        return None

    def start_runner(self, i: int) -> None:
        raise RuntimeError("no `geeh run` workers in a sharded run")

    def start_worker(self, i: int) -> None:
        self.workers[i].start()

    async def run(self) -> None:
        opts = self.opts
        (self.dir / "run.json").write_text(
            json.dumps(dict(asdict(opts), sharded=True, count=COUNT), default=str, indent=1)
        )
        self.began = time.monotonic()
        self.phase("start")
        await asyncio.to_thread(self.cluster.start)
        endpoints = ",".join(self.cluster.endpoints)
        self.client = geeh.Client(self.cluster.endpoints)
        await self.client.connect()
        for i in range(SLOTS):
            args = [
                *["--id", f"s{i}", "--endpoints", endpoints, "--name", NAME],
                *["--count", str(COUNT), "--ttl", str(opts.ttl)],
                *["--out", str(self.dir / f"s{i}.jsonl")],
                *(["--broken"] if opts.broken else []),
            ]
            self.workers.append(Child(f"s{i}", "chaos.shard_worker", args, self.dir))
            self.workers[-1].expected_down = True
        for child in self.workers[:INITIAL]:
            child.start()
        # Broken members never hand a shard over, so they never balance: waiting for it
        # (here, at the settle and at the stop) would only make a broken run long.
        await self._balanced(2.0 * opts.ttl if opts.broken else 60.0)
        faults = schedule(opts.seed, opts.seconds, opts.ttl)
        print(f"chaos: sharded, {len(faults)} faults scheduled over {opts.seconds:g}s", flush=True)
        self.phase("faults")
        nemesis = Nemesis(self, self.faults)
        watchdog = asyncio.ensure_future(self._restart_unexpected_exits())
        try:
            began = time.monotonic()
            async with asyncio.TaskGroup() as group:
                for lane in ("members", "etcd"):
                    mine = [f for f in faults if f.lane == lane]
                    group.create_task(self._lane(nemesis, mine, began))
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        last = time.monotonic()
        self.phase("settle")
        balanced_at = await self._balanced(2 * opts.ttl + (0.0 if opts.broken else 30.0))
        view = await self.client.shards(NAME, COUNT).view()
        (self.dir / "balance.json").write_text(
            json.dumps(
                {
                    "last_fault_end": last,
                    "balanced_at": balanced_at,
                    "running": sum(c.running() for c in self.workers),
                    "held": {format(k, "x"): v for k, v in view.held().items()},
                },
                indent=1,
            )
        )
        self.phase("stop")
        running = [c for c in self.workers if c.running()]
        unclean = await asyncio.to_thread(stop_all, running, 3.0 if opts.broken else 15.0)
        for name, what in unclean.items():
            self.log.write("unclean-stop", proc=name, what=what)
        self.phase("collect")
        await asyncio.to_thread(self._collect)
        self.phase("collected")

    def phase(self, name: str) -> None:
        """Log a phase, and say on stdout how far into the run it began."""
        self.log.write("phase", name=name)
        print(f"chaos: {name} at +{time.monotonic() - self.began:.0f}s", flush=True)

    async def _lane(self, nemesis: Nemesis, faults: list[Fault], began: float) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, began + fault.at - time.monotonic()))
            if fault.lane == "etcd":
                await nemesis.inject(fault)
            else:
                await self._member_fault(fault)

    async def _member_fault(self, f: Fault) -> None:
        up = [i for i, c in enumerate(self.workers) if c.running() and not c.paused]
        down = [i for i, c in enumerate(self.workers) if not c.running()]
        start = time.monotonic()
        target = "none"
        if f.kind == "join" and down:
            i = down[int(f.picks[0] * len(down))]
            self.workers[i].start()
            target = f"s{i}"
        elif f.kind in ("leave", "kill", "pause") and len(up) > 1:
            if f.kind != "leave":  # a member that leads shards, when there is one
                holders = await self._holders()
                up = [i for i in up if f"s{i}" in holders] or up
            i = up[int(f.picks[0] * len(up))]
            child, target = self.workers[i], f"s{i}"
            if f.kind == "leave":
                child.terminate()
            elif f.kind == "kill":
                child.kill()
                await asyncio.sleep(f.hold)
                child.start()
            else:
                child.signal(signal.SIGSTOP)
                await asyncio.sleep(f.hold)
                child.signal(signal.SIGCONT)
        self.faults.write("fault", kind=f.kind, lane=f.lane, target=target, start=start,
                          end=time.monotonic(), at=f.at, skipped=target == "none")  # fmt: skip

    async def _holders(self) -> set[str]:
        """The members that lead a shard now, by name (empty if etcd does not answer)."""
        assert self.client is not None
        with contextlib.suppress(geeh.GeehError, TimeoutError):
            async with asyncio.timeout(2.0):
                view = await self.client.shards(NAME, COUNT).view()
            values = (view.values.get(o.lease, b"") for o in view.owners.values())
            return {value.decode().split(".")[0] for value in values}
        return set()

    async def _balanced(self, timeout: float) -> float | None:
        """When the shards were first seen balanced over the running members (None: never)."""
        assert self.client is not None
        shards = self.client.shards(NAME, COUNT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(geeh.GeehError, TimeoutError):
                async with asyncio.timeout(2.0):
                    view = await shards.view()
                # Each running incarnation a member, and no other (a killed one's key stays
                # until its lease expires).
                running = sorted(f"{c.name}.{c.pid}" for c in self.workers if c.running())
                joined = sorted(view.values[m].decode() for m in view.members)
                if view.balanced() and joined == running:
                    return time.monotonic()
            await asyncio.sleep(0.1)
        return None

    async def _restart_unexpected_exits(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for child in self.workers:
                if not child.expected_down and not child.running():
                    code = child.proc.returncode if child.proc is not None else None
                    self.log.write("unexpected-exit", proc=child.name, code=code)
                    child.start()

    def _collect(self) -> None:
        endpoint = self.cluster.endpoints[0]
        with open(self.dir / "etcd.jsonl", "w", encoding="utf-8") as out:
            for event in history.etcd_events(endpoint):
                out.write(json.dumps(event) + "\n")
        leftover = {
            "keys": history.keys_under(endpoint, NAME + "/"),
            "leases": {
                str(lease): history.lease_ttl(endpoint, lease)
                for lease in history.leases(endpoint, find_etcdctl())
            },
        }
        (self.dir / "leftovers.json").write_text(json.dumps(leftover, indent=1))

    def close(self) -> None:
        stop_all(self.workers, 5.0)
        self.cluster.close()


async def execute(opts: Options) -> None:
    """Run to the end and leave the evidence in ``opts.rundir``; every process is stopped."""
    opts.rundir.mkdir(parents=True, exist_ok=True)
    run = ShardedRun(opts)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await run.run()
    except Exception:
        (opts.rundir / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        if run.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run.client.close(), 5.0)
        await asyncio.to_thread(run.close)


def rundir_is_sharded(rundir: Path) -> bool:
    try:
        return bool(json.loads((rundir / "run.json").read_text()).get("sharded"))
    except (OSError, ValueError):
        return False

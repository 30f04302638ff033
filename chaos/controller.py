"""A chaos run: start everything, let the nemesis loose, heal, stop, collect the evidence.

The run directory holds, after a run: ``run.json`` (the parameters), ``faults.jsonl`` (every
fault with its start and end), ``w<i>.jsonl``, ``r<i>.jsonl`` and ``o<i>.jsonl`` (the
histories of workers, process-level workers and observers) with their ``.stderr``,
``controller.jsonl`` (unexpected exits), ``etcd.jsonl`` (every change etcd made, in revision
order) and ``leftovers.json`` (keys and leases left after the workers stopped). The checker
needs nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import geeh

from . import history
from .cluster import LocalEtcdCluster, TcpProxy, find_etcdctl
from .history import Log
from .nemesis import Fault, Nemesis, schedule
from .proc import Child, stop_all
from .rbac import RbacLane

ELECTION = "chaos-election"
REGISTER = "chaos-register"
# The process-level workers (`geeh run`) campaign in an election of their own.
RUN_ELECTION = "chaos-run"
RUN_REGISTER = "chaos-run-register"


@dataclass
class Options:
    seconds: float
    seed: int
    workers: int
    ttl: int
    broken: bool
    freeze_raft_leader: bool
    etcd: str | None
    rundir: Path
    runners: int = 2


class Run:
    """One run's processes and proxies; also the nemesis's :class:`~chaos.nemesis.Rig`."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.dir = opts.rundir
        # Data in a temporary directory (removed at close), member logs in the run's.
        self.cluster = LocalEtcdCluster(3, etcd_bin=opts.etcd, log_dir=str(self.dir))
        self.proxies: list[list[TcpProxy]] = []
        self.workers: list[Child] = []
        self.runners: list[Child] = []
        self.observers: list[Child] = []
        self.log = Log(self.dir / "controller.jsonl")
        self.client: geeh.Client | None = None
        self.members_down: set[int] = set()
        self.rbac: RbacLane | None = None
        self.observers_extra: list[Child] = []  # the rbac lane's process

    # -- the rig ----------------------------------------------------------------------------

    async def leading_worker(self) -> int | None:
        """The worker whose key leads, as etcd says; None if etcd says none for a while."""
        return await self._leader(ELECTION)

    async def leading_runner(self) -> int | None:
        """The process-level worker whose key leads, as etcd says (None: none for a while)."""
        return await self._leader(RUN_ELECTION)

    def cmd_pid(self, runner: int) -> int | None:
        beats = [r for r in history.read(self.dir / f"r{runner}.jsonl") if r["ev"] == "beat"]
        return next((r["pid"] for r in reversed(beats) if r["role"] == "cmd"), None)

    async def _leader(self, name: str) -> int | None:
        """The index in the leader's value (w3, r1), as etcd says.

        During a fault etcd may not answer, or there may be no leader for a moment: ask
        again for up to two TTLs.
        """
        assert self.client is not None
        election = self.client.election(name)
        deadline = time.monotonic() + 2 * self.opts.ttl
        while True:
            with contextlib.suppress(TimeoutError, geeh.GeehError):
                async with asyncio.timeout(1.0):
                    leader = await election.leader()
                if leader is not None:
                    return int(leader.value_str[1:])
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)

    def start_worker(self, i: int) -> None:
        self.workers[i].start()

    def start_runner(self, i: int) -> None:
        self.runners[i].start()

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> None:
        opts = self.opts
        (self.dir / "run.json").write_text(json.dumps(asdict(opts), default=str, indent=1))
        await asyncio.to_thread(self.cluster.start)
        endpoints = self.cluster.endpoints
        for _ in range(opts.workers):
            self.proxies.append([_proxy(endpoint) for endpoint in endpoints])
        self.client = geeh.Client(endpoints)
        await self.client.connect()
        common = ["--election", ELECTION]
        for j in range(2):
            out = self.dir / f"o{j}.jsonl"
            args = ["--endpoints", ",".join(endpoints), "--out", str(out), *common]
            self.observers.append(Child(f"o{j}", "chaos.observer", args, self.dir))
            self.observers[-1].start()
            await _wait_for(functools.partial(_has, out, "leader"), 30.0, f"report by o{j}")
        self.rbac = RbacLane(self.dir, opts.etcd)
        await asyncio.to_thread(self.rbac.start)
        self.observers_extra = [self.rbac.spawn()]
        await _wait_for(functools.partial(_has, self.dir / "rbac.jsonl", "wrote"), 30.0, "rbac")
        for i in range(opts.workers):
            links = ",".join(proxy.endpoint for proxy in self.proxies[i])
            args = [
                *["--id", f"w{i}", "--endpoints", links, "--register", REGISTER, *common],
                *["--ttl", str(opts.ttl), "--out", str(self.dir / f"w{i}.jsonl")],
                *(["--broken"] if opts.broken else []),
            ]
            self.workers.append(Child(f"w{i}", "chaos.worker", args, self.dir))
            self.workers[-1].start()
        for i in range(opts.runners):
            self.runners.append(self._runner(i, ",".join(endpoints)))
            self.runners[-1].start()
        # Faults start once a leader works: the liveness check counts from there.
        outs = [self.dir / f"w{i}.jsonl" for i in range(opts.workers)]
        await _wait_for(lambda: any(_has(out, "act") for out in outs), 60.0, "write by a worker")
        if opts.runners:
            runs = [self.dir / f"r{i}.jsonl" for i in range(opts.runners)]
            await _wait_for(lambda: any(_has(r, "beat") for r in runs), 60.0, "a geeh run job")
        faults = schedule(opts.seed, opts.seconds, opts.ttl)
        print(f"chaos: {len(faults)} faults scheduled over {opts.seconds:g}s", flush=True)
        watchdog = asyncio.ensure_future(self._restart_unexpected_exits())
        phase = asyncio.ensure_future(self._faults_then_settle(faults))
        try:
            await asyncio.wait({phase, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done():
                watchdog.result()  # it never ends by itself: this raises its error
            phase.result()
        finally:
            for task in (phase, watchdog):
                task.cancel()
            await asyncio.gather(phase, watchdog, return_exceptions=True)
        await self._stop()

    def _runner(self, i: int, endpoints: str) -> Child:
        """``geeh run`` with a job as CMD: its heartbeats and fenced writes go to r<i>.jsonl."""
        out = str(self.dir / f"r{i}.jsonl")
        job = [sys.executable, "-m", "chaos.job", "--id", f"r{i}", "--out", out,
               "--register", RUN_REGISTER]  # fmt: skip
        geeh_run = [sys.executable, "-m", "geeh.cli", "run", "--endpoints", endpoints,
                    "--ttl", str(self.opts.ttl), "--value", f"r{i}", RUN_ELECTION]  # fmt: skip
        return Child(f"r{i}", "chaos.launch", ["--", *geeh_run, "--", *job], self.dir)

    async def _faults_then_settle(self, faults: list[Fault]) -> None:
        self.log.write("phase", name="faults")
        nemesis = Nemesis(
            self, Log(self.dir / "faults.jsonl"), freeze_raft_leader=self.opts.freeze_raft_leader
        )
        await nemesis.run(faults, time.monotonic())
        # Let the cluster and the election settle past every lease a killed worker left.
        settle = 2 * self.opts.ttl + 2
        self.log.write("phase", name="settle", seconds=settle)
        await asyncio.sleep(settle)

    async def _stop(self) -> None:
        self.log.write("phase", name="stop")
        unclean = await asyncio.to_thread(stop_all, self.workers + self.runners, 15.0)
        for name, what in unclean.items():
            # `geeh run` exits with CMD's status, or 128+15 when it was still campaigning.
            if not name.startswith("r") or "still running" in what:
                self.log.write("unclean-stop", proc=name, what=what)
        # The observers report the last resignation, then stop.
        for j in range(len(self.observers)):
            out = self.dir / f"o{j}.jsonl"
            with contextlib.suppress(TimeoutError):
                await _wait_for(functools.partial(_last_leader_none, out), 10.0, "last report")
        unclean = await asyncio.to_thread(stop_all, self.observers, 10.0)
        if self.rbac is not None:
            unclean.update(await asyncio.to_thread(self.rbac.stop, 15.0))
        for name, what in unclean.items():
            self.log.write("unclean-stop", proc=name, what=what)
        await asyncio.to_thread(self._collect)

    def _collect(self) -> None:
        endpoint = self.cluster.endpoints[0]
        with open(self.dir / "etcd.jsonl", "w", encoding="utf-8") as out:
            for event in history.etcd_events(endpoint):
                out.write(json.dumps(event) + "\n")
        leftover = {
            "keys": history.keys_under(endpoint, ELECTION + "/")
            + history.keys_under(endpoint, RUN_ELECTION + "/"),
            "leases": {
                str(lease): history.lease_ttl(endpoint, lease)
                for lease in history.leases(endpoint, find_etcdctl())
            },
        }
        (self.dir / "leftovers.json").write_text(json.dumps(leftover, indent=1))

    async def _restart_unexpected_exits(self) -> None:
        """Record and restart any process that died when the nemesis did not kill it."""
        while True:
            await asyncio.sleep(0.5)
            for child in self.workers + self.observers + self.observers_extra:
                if not child.expected_down and not child.running():
                    code = child.proc.returncode if child.proc is not None else None
                    self.log.write("unexpected-exit", proc=child.name, code=code)
                    child.start()
            for child in self.runners:  # `geeh run` ends with its leadership: start it again
                if not child.expected_down and not child.running():
                    code = child.proc.returncode if child.proc is not None else None
                    self.log.write("run-exit", proc=child.name, code=code)
                    child.start()
            dead = [i for i in range(self.cluster.size) if not self.cluster.is_running(i)]
            lost = [i for i in dead if i not in self.members_down]
            for i in lost:
                self.log.write("unexpected-exit", proc=f"m{i}", code="stopped from outside?")
            if lost and len(dead) > 1:
                # A member restarts only with a quorum to join: nothing to heal by restarting.
                names = ", ".join(f"m{i}" for i in lost)
                raise RuntimeError(f"etcd {names} stopped from outside the run, quorum lost")
            for i in lost:
                with contextlib.suppress(Exception):  # tried again in half a second
                    await asyncio.to_thread(self.cluster.restart, i)

    def close(self) -> None:
        """Stop everything, whatever state the run is in. Idempotent, bounded."""
        children = self.workers + self.runners + self.observers
        stop_all(children, 5.0)
        for row in self.proxies:
            for proxy in row:
                proxy.close()
        if self.rbac is not None:
            self.rbac.close()
        self.cluster.close()


async def _wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``ready`` (it reads a file another process writes) until true, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g}s")
        await asyncio.sleep(0.05)


def _proxy(endpoint: str) -> TcpProxy:
    host, port = endpoint.rsplit(":", 1)
    return TcpProxy(host, int(port)).start()


def _has(path: Path, ev: str) -> bool:
    return any(r["ev"] == ev for r in history.read(path))


def _last_leader_none(path: Path) -> bool:
    leaders = [r for r in history.read(path) if r["ev"] == "leader"]
    return bool(leaders) and leaders[-1]["token"] is None


async def execute(opts: Options) -> None:
    """Run to the end and leave the evidence in ``opts.rundir``; every process is stopped."""
    opts.rundir.mkdir(parents=True, exist_ok=True)
    run = Run(opts)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
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

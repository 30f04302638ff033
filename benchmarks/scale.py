"""4. Scale: 1, 10, 100 and 1000 waiting candidates in one election.

Candidates live in worker processes (benchmarks/scale_worker.py), all in one or round-robin
over four. All queue lengths run at once, each in an election and workers of its own, their
hand-offs in rotation. A hand-off: the leader's worker stamps the resign, the successor's its
win; then a candidate joins at the tail. Requests are the workers' counters from just before
the resign to SETTLE after the win; memory, the one-process worker's RSS growth per
candidate, and in a separate run the Python heap growth (tracemalloc).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .common import Config, Etcd, Proc, Series, rotation

TTL = 60  # keeps 1000 sessions' keepalives at 50/s; a hand-off does not depend on the TTL
# Counted after the win: what the hand-off set off among the candidates behind (their
# read-ahead waits geeh.win.READ_AHEAD_DELAY) belongs to it.
SETTLE = 0.25


@dataclass
class ScaleResult:
    waiting: int
    processes: int
    latency: Series
    unary: list[float] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)
    received: list[float] = field(default_factory=list)
    cluster: str = "1-member"
    watch_msgs: list[float] = field(default_factory=list)
    rss_per_candidate: float = float("nan")
    setup_seconds: float = float("nan")


class Workers:
    """Worker processes (benchmarks/scale_worker.py) holding the candidates of one election."""

    def __init__(self, eps: list[str], name: str, n: int, *flags: str, rotate: bool = False):
        self.procs = []
        for i in range(n):
            # With rotate, worker i starts on member i (mod size): its leases get that
            # member's ID prefix, as candidates spread over a cluster's members would.
            k = i % len(eps) if rotate else 0
            argv = [sys.executable, "-m", "benchmarks.scale_worker", "--name", name, *flags]
            argv += ["--endpoints", ",".join(eps[k:] + eps[:k]), "--id", f"w{i}", "--ttl", str(TTL)]
            self.procs.append(Proc(argv, f"scale-w{i}", stdin=True))
        self.cursor = 0
        self.won_seen = [0] * n

    async def ready(self) -> None:
        for p in self.procs:
            await p.wait_line(lambda s: s.startswith(b"ready "), timeout=60)

    def add(self, n: int) -> None:
        """Add n candidates, round-robin over the workers."""
        share = [0] * len(self.procs)
        for _ in range(n):
            share[self.cursor] += 1
            self.cursor = (self.cursor + 1) % len(self.procs)
        for p, k in zip(self.procs, share, strict=True):
            if k:
                p.send(f"add {k}")

    async def ask(self, p: Proc, command: str) -> list[bytes]:
        """The fields of the worker's reply, a line that starts with the command's name."""
        start = len(p.lines)
        p.send(command)
        reply = command.split()[0].encode()  # "resign" is answered by "resigned"
        _, line, _ = await p.wait_line(lambda s: s.startswith(reply), start, timeout=60)
        return line.split()[1:]

    async def mem(self, i: int = 0) -> list[int]:
        """Worker ``i``'s RSS and traced Python heap, in bytes."""
        return [int(x) for x in await self.ask(self.procs[i], "mem")]

    async def counts(self) -> tuple[list[int], Counter[str]]:
        """Summed over the workers: unary requests, watch creates + cancels, watch responses
        received; and unary requests by method."""
        totals, paths = [0, 0, 0], Counter[str]()
        for p in self.procs:
            u, w, r, by_path = await self.ask(p, "counts")
            totals = [a + int(b) for a, b in zip(totals, (u, w, r), strict=True)]
            paths.update(json.loads(by_path))
        return totals, paths

    async def next_win(self, timeout: float = 60.0) -> tuple[int, float, bytes]:
        """The next "won" line from any worker: (worker index, T1, key)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, p in enumerate(self.procs):
                wins = [s for _, s in p.lines if s.startswith(b"won ")]
                if len(wins) > self.won_seen[i]:
                    _, key, t1 = wins[self.won_seen[i]].split()
                    self.won_seen[i] += 1
                    return i, float(t1), key
            if time.monotonic() > deadline:
                raise TimeoutError("no candidate won")
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    p.send("quit")
        for p in self.procs:
            await p.wait_exit(15)
            p.kill()


class Election:
    """One election of N waiting candidates (plus the leader) in its own worker processes."""

    def __init__(
        self, endpoints: list[str], etcd: Etcd, waiting: int, processes: int, rotate: bool
    ) -> None:
        self.name = f"bench-scale-{waiting}-{processes}{'-rotated' if rotate else ''}"
        self.etcd, self.waiting, self.processes, self.spread = etcd, waiting, processes, rotate
        self.result = ScaleResult(
            waiting, processes, Series(f"{waiting} waiting, {processes} proc")
        )
        self.result.cluster = f"{len(endpoints)}-member"
        self.result.cluster += ", one member per process" if rotate else ""
        self.workers = Workers(endpoints, self.name, processes, rotate=rotate)
        self.leader_worker, self.leader_key = 0, b""

    async def start(self) -> None:
        workers = self.workers
        await self.etcd.clear(self.name)
        await workers.ready()
        # The leader first, then N waiting behind it.
        workers.add(1)
        self.leader_worker, _, self.leader_key = await workers.next_win()
        rss1 = (await workers.mem())[0]
        t_setup = time.monotonic()
        if self.spread:
            # One at a time, round-robin: replicas starting one after another, each on its
            # own member, so that key (lease-ID) order differs from join order throughout.
            for n in range(2, self.waiting + 2):
                workers.add(1)
                await self.etcd.wait_count(self.name, n, timeout=30, poll=0.002)
        else:
            workers.add(self.waiting)
            await self.etcd.wait_count(self.name, self.waiting + 1, timeout=300)
        self.result.setup_seconds = time.monotonic() - t_setup
        await asyncio.sleep(0.5 + self.waiting / 1000)
        if self.processes == 1:
            self.result.rss_per_candidate = ((await workers.mem())[0] - rss1) / self.waiting

    async def handoff(self) -> None:
        workers, result = self.workers, self.result
        before, paths0 = await workers.counts()
        leader = workers.procs[self.leader_worker]
        t0 = float((await workers.ask(leader, f"resign {self.leader_key.decode()}"))[1])
        self.leader_worker, t1, self.leader_key = await workers.next_win()
        result.latency.add(t1 - t0)
        await asyncio.sleep(SETTLE)  # the candidates behind catch up (read-ahead): count it
        (unary, watch, received), paths1 = await workers.counts()
        result.unary.append(unary - before[0])
        result.watch_msgs.append(watch - before[1])
        result.received.append(received - before[2])
        paths1.subtract(paths0)
        result.paths.update(+paths1)
        workers.add(1)
        await self.etcd.wait_count(self.name, self.waiting + 1)

    async def close(self) -> None:
        await self.workers.close()
        await self.etcd.clear(self.name)


async def traced_memory(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Any]:
    """Python heap growth per waiting candidate (tracemalloc), one process."""
    n = cfg.n(1000, 200)
    name = "bench-scale-traced"
    await etcd.clear(name)
    workers = Workers(endpoints, name, 1, "--tracemalloc")
    try:
        await workers.ready()
        workers.add(1)
        await workers.next_win()
        await asyncio.sleep(0.3)
        traced1 = (await workers.mem())[1]
        workers.add(n)
        await etcd.wait_count(name, n + 1, timeout=300)
        await asyncio.sleep(1.0)
        traced2 = (await workers.mem())[1]
    finally:
        await workers.close()
        await etcd.clear(name)
    return {"candidates": n, "traced_per_candidate": (traced2 - traced1) / n}


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Any]:
    """One member: one and four processes, and the heap per candidate. A cluster: four
    processes, each pinned to a different member first."""

    async def interleaved(sizes: tuple[int, ...], n: int, rotate: bool) -> list[ScaleResult]:
        """All sizes at once, each in its own election and workers; hand-offs in rotation."""
        elections = [Election(endpoints, etcd, size, n, rotate) for size in sizes]
        try:
            for e in elections:
                await e.start()
            await asyncio.sleep(1.0)
            for e in rotation(cfg.n(30, 8), elections):
                await asyncio.sleep(0.1)
                await e.handoff()
        finally:
            for e in elections:
                await e.close()
        return [e.result for e in elections]

    if len(endpoints) > 1:
        print(f"    scale: 1, 100, 1000 waiting, 4 processes over {len(endpoints)} members")
        return {"results": await interleaved((1, 100, 1000), 4, True)}
    results: list[ScaleResult] = []
    for processes in (1, 4):
        print(f"    scale: 1, 10, 100, 1000 waiting, {processes} process(es) each")
        results += await interleaved((1, 10, 100, 1000), processes, False)
    return {"results": results, "traced": await traced_memory(cfg, endpoints, etcd)}

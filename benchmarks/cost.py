"""5. Idle cost of leading, waiting and observing: etcd requests and CPU per minute.

``run``: each role is one process on an etcd of its own, all at once, so etcd's counters on
/metrics (every unary request and stream message received) are that process's traffic.
``fleet`` (5b): N observer processes of one election on an etcd of their own, gee-h's and
etcdctl's one after the other: what reached etcd, and the CPU etcd spent.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import psutil

import geeh
from geeh.election import DEFAULT_TTL
from geeh.testing import LocalEtcdCluster
from geeh.watch import PROBE_IDLE

from .common import (
    ETCDCTL,
    GEEH,
    Config,
    Etcd,
    Proc,
    cli,
    delta,
    idle,
    is_key_of,
    kill_all,
    local_etcd,
    process_cpu,
    scrape,
)

NAME = "bench-cost"


@dataclass
class Role:
    role: str  # leader, waiting, observer
    impl: str
    ttl: int | None  # None: the implementation's default (etcdctl: 60 s, fixed)
    seconds: float = 0.0
    messages: dict[str, float] = field(default_factory=dict)
    cpu: float = 0.0
    rss: int = 0

    @property
    def label(self) -> str:
        name = {GEEH: "geeh elect", ETCDCTL: "etcdctl elect"}[self.impl]
        if self.role == "observer":
            return name + (" -l" if self.impl == ETCDCTL else " --listen")
        ttl = self.ttl if self.ttl is not None else (60 if self.impl == ETCDCTL else DEFAULT_TTL)
        return f"{name} (TTL {ttl} s)"

    @property
    def per_minute(self) -> float:
        return sum(self.messages.values()) * 60 / self.seconds if self.seconds else math.nan

    @property
    def cpu_per_minute(self) -> float:
        return self.cpu * 60 / self.seconds if self.seconds else math.nan


# The longest TTL whose keepalive interval (TTL/3) is shorter than the watch probe's idle
# period: its keepalive replies keep the watch stream's member proven alive, so no probe.
SHORT_TTL = max(1, math.ceil(3 * PROBE_IDLE) - 1)
ROLES = [
    ("leader", GEEH, SHORT_TTL),
    ("leader", GEEH, None),
    ("leader", GEEH, 60),
    ("leader", ETCDCTL, None),
    ("waiting", GEEH, None),
    ("waiting", GEEH, 60),
    ("waiting", ETCDCTL, None),
    ("observer", GEEH, None),
    ("observer", ETCDCTL, None),
]


async def _prepare(role: Role, endpoints: list[str]) -> Proc:
    async with geeh.Client(endpoints) as client:
        etcd = Etcd(client)
        if role.role != "leader":
            # A leader that costs nothing: a plain key with no lease, older than anyone.
            await etcd.put(b"bench-cost/0", b"idle-leader")
        if role.role == "observer":
            proc = Proc(cli(role.impl, endpoints, "listen", NAME), f"cost-{role.impl}-observer")
            await proc.wait_line(is_key_of(NAME), timeout=30)
        else:
            proc = Proc(cli(role.impl, endpoints, "elect", NAME, "v", ttl=role.ttl), "cost")
            if role.role == "leader":
                await proc.wait_line(is_key_of(NAME), timeout=30)
            else:
                await etcd.wait_count(NAME, 2)
    return proc


async def run(cfg: Config) -> dict[str, Role]:
    roles = [Role(r, impl, ttl) for r, impl, ttl in ROLES]
    clusters = [LocalEtcdCluster(1) for _ in roles]
    procs: list[Proc] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(c.start) for c in clusters))
        for role, cluster in zip(roles, clusters, strict=True):
            procs.append(await _prepare(role, cluster.endpoints))
        await asyncio.sleep(2.0)  # past start-up work (first keepalive, watch creation)
        ps = [psutil.Process(p.pid) for p in procs]

        def read() -> tuple[list[dict[str, float]], list[float]]:
            return [scrape(c.client_urls[0]) for c in clusters], [
                sum(p.cpu_times()[:2]) for p in ps
            ]

        (before, cpu0), (after, cpu1), elapsed = await idle(cfg.n(60, 12), read)
        for i, role in enumerate(roles):
            role.seconds = elapsed
            role.cpu = cpu1[i] - cpu0[i]
            role.rss = ps[i].memory_info().rss
            role.messages = delta(after[i], before[i])
    finally:
        for p in procs:
            await p.stop()
        await asyncio.gather(*(asyncio.to_thread(c.close) for c in clusters))
    return {f"{r.role}-{r.impl}-ttl{r.ttl or 'default'}": r for r in roles}


# -- 5b. a fleet of idle observers ---------------------------------------------------------


@dataclass
class Fleet:
    impl: str
    n: int
    seconds: float = 0.0
    messages: dict[str, float] = field(default_factory=dict)
    etcd_cpu: float = 0.0  # seconds of etcd's CPU over the window
    start_seconds: float = 0.0  # until all N printed the leader

    @property
    def per_second(self) -> float:
        return sum(self.messages.values()) / self.seconds if self.seconds else math.nan

    @property
    def cpu_share(self) -> float:
        """etcd's CPU over the window as a share of one core."""
        return self.etcd_cpu / self.seconds if self.seconds else math.nan


async def _fleet(impl: str, n: int, seconds: float) -> Fleet:
    result = Fleet(impl, n)
    async with local_etcd() as cluster:
        procs: list[Proc] = []
        try:
            async with geeh.Client(cluster.endpoints) as client:
                await Etcd(client).put(b"bench-fleet/0", b"idle-leader")
            t0 = time.monotonic()
            for _ in range(n):
                procs.append(Proc(cli(impl, cluster.endpoints, "observe", "bench-fleet"), "fleet"))
            for p in procs:
                await p.wait_line(is_key_of("bench-fleet"), timeout=120)
            result.start_seconds = time.monotonic() - t0
            await asyncio.sleep(3.0)  # past start-up work
            pid, url = cluster.pid(0), cluster.client_urls[0]
            assert pid is not None
            (before, cpu0), (after, cpu1), result.seconds = await idle(
                seconds, lambda: (scrape(url), process_cpu(pid))
            )
            result.etcd_cpu, result.messages = cpu1 - cpu0, delta(after, before)
        finally:
            for p in procs:
                p.kill()
    return result


async def fleet(cfg: Config) -> dict[str, Fleet]:
    out: dict[str, Fleet] = {}
    try:
        for n in cfg.n((10, 100), (10,)):
            for impl in (GEEH, ETCDCTL):
                print(f"    {n} x {impl}", flush=True)
                out[f"{impl}-{n}"] = await _fleet(impl, n, cfg.n(60, 15))
    finally:
        kill_all()
    return out

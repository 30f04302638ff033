"""5. The cost of leading, waiting and observing: etcd requests and CPU per minute, idle.

Each role runs as its own process against an etcd of its own (single member), all at the same
time, so etcd's own counters (``grpc_server_msg_received_total`` on /metrics: every unary
request and every message received on a stream, keepalives and watch requests included) are
that one process's traffic, for gee-h and etcdctl alike. CPU is the process's user + system
time (psutil), RSS its resident memory at the end.
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
    delta,
    elect_argv,
    is_key_of,
    listen_argv,
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
            name += " -l" if self.impl == ETCDCTL else " --listen"
        ttl = self.ttl if self.ttl is not None else (60 if self.impl == ETCDCTL else DEFAULT_TTL)
        return name if self.role == "observer" else f"{name} (TTL {ttl} s)"

    @property
    def per_minute(self) -> float:
        return sum(self.messages.values()) * 60 / self.seconds if self.seconds else float("nan")

    @property
    def cpu_per_minute(self) -> float:
        return self.cpu * 60 / self.seconds if self.seconds else float("nan")


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


async def _prepare(role: Role, cluster: LocalEtcdCluster) -> Proc:
    endpoints = cluster.endpoints
    async with geeh.Client(endpoints) as client:
        etcd = Etcd(client)
        if role.role != "leader":
            # A leader that costs nothing: a plain key with no lease, older than anyone.
            await etcd.put(b"bench-cost/0", b"idle-leader")
        if role.role == "observer":
            proc = Proc(listen_argv(role.impl, endpoints, NAME), f"cost-{role.impl}-observer")
            await proc.wait_line(is_key_of(NAME), timeout=30)
        else:
            proc = Proc(elect_argv(role.impl, endpoints, NAME, "v", ttl=role.ttl), "cost")
            if role.role == "leader":
                await proc.wait_line(is_key_of(NAME), timeout=30)
            else:
                await etcd.wait_count(NAME, 2)
    return proc


async def run(cfg: Config) -> dict[str, Role]:
    seconds = cfg.secs(60, 12)
    roles = [Role(r, impl, ttl) for r, impl, ttl in ROLES]
    clusters = [LocalEtcdCluster(1) for _ in roles]
    procs: list[Proc] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(c.start) for c in clusters))
        for role, cluster in zip(roles, clusters, strict=True):
            procs.append(await _prepare(role, cluster))
        await asyncio.sleep(2.0)  # past start-up work (first keepalive, watch creation)
        ps = [psutil.Process(p.pid) for p in procs]
        before = [scrape(c.client_urls[0]) for c in clusters]
        cpu0 = [sum(p.cpu_times()[:2]) for p in ps]
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        after = [scrape(c.client_urls[0]) for c in clusters]
        cpu1 = [sum(p.cpu_times()[:2]) for p in ps]
        elapsed = time.monotonic() - t0
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

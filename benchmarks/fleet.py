"""5b. Fleet cost: N idle observer processes against one etcd, gee-h beside ``etcdctl elect -l``.

For each N, N ``geeh observe`` processes watch one election (a leader key without a lease)
on an etcd of their own, then N ``etcdctl elect -l`` on another; over an idle window the
driver reads what reached etcd (``grpc_server_msg_received_total`` on /metrics, every unary
request and every stream message) and the CPU etcd itself spent (utime + stime of its
process, from /proc/PID/stat). The two fleets are measured one after the other, so that
each has the two cores to itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import geeh
from geeh.testing import LocalEtcdCluster

from .common import ETCDCTL, GEEH, Config, Etcd, Proc, delta, is_key_of, kill_all, scrape
from .concurrent import observe_argv

NAME = "bench-fleet"
TICK = os.sysconf("SC_CLK_TCK")


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
        return sum(self.messages.values()) / self.seconds if self.seconds else float("nan")

    @property
    def cpu_share(self) -> float:
        """etcd's CPU over the window as a share of one core."""
        return self.etcd_cpu / self.seconds if self.seconds else float("nan")


def process_cpu(pid: int) -> float:
    """utime + stime of ``pid``, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def _fleet(impl: str, n: int, seconds: float) -> Fleet:
    result = Fleet(impl, n)
    cluster = LocalEtcdCluster(1)
    await asyncio.to_thread(cluster.start)
    procs: list[Proc] = []
    try:
        endpoints = cluster.endpoints
        async with geeh.Client(endpoints) as client:
            await Etcd(client).put(b"bench-fleet/0", b"idle-leader")
        t0 = time.monotonic()
        for _ in range(n):
            procs.append(Proc(observe_argv(impl, endpoints, NAME), f"fleet-{impl}"))
        for p in procs:
            await p.wait_line(is_key_of(NAME), timeout=120)
        result.start_seconds = time.monotonic() - t0
        await asyncio.sleep(3.0)  # past start-up work
        pid = cluster.pid(0)
        assert pid is not None
        url = cluster.client_urls[0]
        before, cpu0, t0 = scrape(url), process_cpu(pid), time.monotonic()
        await asyncio.sleep(seconds)
        after, cpu1 = scrape(url), process_cpu(pid)
        result.seconds = time.monotonic() - t0
        result.etcd_cpu = cpu1 - cpu0
        result.messages = delta(after, before)
    finally:
        for p in procs:
            p.kill()
        await asyncio.to_thread(cluster.close)
    return result


async def run(cfg: Config) -> dict[str, Fleet]:
    seconds = cfg.secs(60, 15)
    sizes = (10, 100) if not cfg.quick else (10,)
    out: dict[str, Fleet] = {}
    try:
        for n in sizes:
            for impl in (GEEH, ETCDCTL):
                print(f"    {n} x {impl}", flush=True)
                out[f"{impl}-{n}"] = await _fleet(impl, n, seconds)
    finally:
        kill_all()
    return out

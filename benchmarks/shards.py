"""5c. Shard leadership: one process holding N elections (one per shard) on one shared session.

For N = 10, 100, 1000 and 10,000 (--quick: up to 1000) a worker process
(benchmarks/shard_worker.py) campaigns in N elections at once on an etcd of its own and
reports the time until it leads them all and its RSS before and after; then, idle for a
window, the driver reads from etcd's /metrics what the worker's streams carried: messages
etcd received on the Watch stream and on the LeaseKeepAlive stream, and the Watch messages
it sent. A progress request covers the whole watch stream, and a shared session's
keepalives prove the member alive for every election at once, so none of these may grow
with N.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field

from .common import Config, Proc, delta, idle, kill_all, local_etcd, scrape


@dataclass
class Shards:
    n: int
    win_seconds: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    held_before_kib: int = 0  # RSS after malloc_trim(0): see shard_worker.py
    held_after_kib: int = 0
    seconds: float = 0.0
    received: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)

    @property
    def rss_per_election_kib(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.n

    @property
    def held_per_election_kib(self) -> float:
        return (self.held_after_kib - self.held_before_kib) / self.n

    def per_minute(self, counts: dict[str, float], key: str) -> float:
        return counts.get(key, 0.0) * 60 / self.seconds if self.seconds else float("nan")


async def _one(n: int, seconds: float) -> Shards:
    result = Shards(n)
    async with local_etcd() as cluster:
        eps = ",".join(cluster.endpoints)
        proc = Proc([sys.executable, "-m", "benchmarks.shard_worker", str(n), eps], "shards")
        try:
            _, line, _ = await proc.wait_line(lambda line: line.startswith(b"won "), timeout=600)
            took, *kib = line.split()[1:6]
            result.win_seconds = float(took)
            result.rss_before_kib, result.rss_after_kib, *held = map(int, kib)
            result.held_before_kib, result.held_after_kib = held
            await asyncio.sleep(2.0)  # past the last watch confirmations
            url = cluster.client_urls[0]
            (r0, s0), (r1, s1), result.seconds = await idle(
                seconds, lambda: (scrape(url), scrape(url, sent=True))
            )
            result.received, result.sent = delta(r1, r0), delta(s1, s0)
        finally:
            await proc.stop(timeout=30)
    return result


async def run(cfg: Config) -> dict[str, Shards]:
    seconds = cfg.n(60, 15)
    sizes = (10, 100, 1000) if cfg.quick else (10, 100, 1000, 10_000)
    out: dict[str, Shards] = {}
    try:
        for n in sizes:
            print(f"    {n} elections", flush=True)
            out[str(n)] = await _one(n, seconds)
    finally:
        kill_all()
    return out

"""3. Crash failover: the leader process is SIGKILLed; time until the successor prints its key.

gee-h only: ``etcdctl elect``'s session TTL is fixed at 60 s, so it has no comparable figure.
The TTL 2 s and TTL 5 s chains run side by side on two elections (their trials overlap in
time: each spends nearly all of it idle, waiting for etcd to expire the dead leader's lease).
"""

from __future__ import annotations

import asyncio
import signal
import time

from .common import GEEH, Config, Etcd, Series
from .handoff import Chain

SETTLE = 0.1  # beyond the chain's own settle time


async def _chain(ttl: int, trials: int, endpoints: list[str], etcd: Etcd, out: Series) -> None:
    chain = Chain(GEEH, endpoints, f"bench-crash-ttl{ttl}", etcd, ttl=ttl)
    try:
        await chain.start()
        for _ in range(trials):
            # Let a keepalive or two pass, so the kill lands at a random point in the cycle.
            await asyncio.sleep(SETTLE + (time.monotonic() % 1.0) * ttl / 3)
            try:
                out.add(await chain.hand_over(signal.SIGKILL, timeout=ttl + 30))
            except (TimeoutError, RuntimeError) as err:
                print(f"    crash ttl={ttl} trial failed: {err}")
                out.failures += 1
            await chain.refill(timeout=ttl + 30)
    finally:
        await chain.close()


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[int, Series]:
    series = {ttl: Series(f"TTL {ttl} s") for ttl in (2, 5)}
    await asyncio.gather(
        _chain(2, cfg.n(16, 4), endpoints, etcd, series[2]),
        _chain(5, cfg.n(10, 2), endpoints, etcd, series[5]),
    )
    return series

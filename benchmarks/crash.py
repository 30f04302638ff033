"""3. Crash failover: the leader process is SIGKILLed; time until the successor prints its key.

gee-h only: ``etcdctl elect``'s session TTL is fixed at 60 s, so it has no comparable figure.
The TTL 2 s and TTL 5 s chains run side by side on two elections (their trials overlap in
time: each spends nearly all of it idle, waiting for etcd to expire the dead leader's lease).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

from .common import GEEH, Config, Etcd, Proc, Series, elect_argv, is_key_of

SETTLE = 0.5


async def _chain(ttl: int, trials: int, endpoints: list[str], etcd: Etcd, out: Series) -> None:
    name = f"bench-crash-ttl{ttl}"
    numbers = itertools.count()

    def spawn() -> Proc:
        return Proc(
            elect_argv(GEEH, endpoints, name, f"c{next(numbers)}", ttl=ttl), f"crash-ttl{ttl}"
        )

    await etcd.clear(name)
    leader = spawn()
    successor: Proc | None = None
    try:
        await leader.wait_line(is_key_of(name), timeout=30)
        for _ in range(trials):
            successor = spawn()
            await etcd.wait_count(name, 2)
            # Let a keepalive or two pass, so the kill lands at a random point in the cycle.
            await asyncio.sleep(SETTLE + (time.monotonic() % 1.0) * ttl / 3)
            t0 = time.monotonic()
            leader.signal(signal.SIGKILL)
            try:
                t1, _, _ = await successor.wait_line(is_key_of(name), timeout=ttl + 30)
                out.add(t1 - t0)
            except (TimeoutError, RuntimeError) as err:
                print(f"    crash ttl={ttl} trial failed: {err}")
                out.failures += 1
            leader.kill()
            leader, successor = successor, None
            await etcd.wait_count(name, 1, timeout=ttl + 30)
    finally:
        leader.kill()
        if successor is not None:
            successor.kill()
        await etcd.clear(name)


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[int, Series]:
    series = {ttl: Series(f"TTL {ttl} s") for ttl in (2, 5)}
    await asyncio.gather(
        _chain(2, cfg.n(16, 4), endpoints, etcd, series[2]),
        _chain(5, cfg.n(10, 2), endpoints, etcd, series[5]),
    )
    return series

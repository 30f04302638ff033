"""1. Hand-offs, gee-h beside ``etcdctl elect`` (the report's sections 1 and 3 say how).

``process_level``: SIGINT to a leader process until its successor prints its key line, one
reference trial and one gee-h trial in turn. ``in_process``: ``resign()`` until the waiting
campaign returns, against the floor (one Delete plus one watch event, gee-h's and etcdctl's).
``crash``: SIGKILL to the leader (gee-h only, TTL 2 s and 5 s side by side).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import geeh

from .common import (
    ETCDCTL,
    GEEH,
    Config,
    Etcd,
    Proc,
    Series,
    attempt,
    cli,
    is_key_of,
    rotation,
    unary_requests,
)

SETTLE = 0.4  # after the successor's key exists: let it finish setting up its watch


class Chain:
    """A leader process and a waiting successor process of one kind, replenished per trial."""

    def __init__(self, impl: str, endpoints: list[str], name: str, etcd: Etcd, ttl: int = 10):
        self.impl, self.endpoints, self.name, self.etcd, self.ttl = impl, endpoints, name, etcd, ttl
        self.count = itertools.count()
        self.leader: Proc | None = None
        self.successor: Proc | None = None

    def _spawn(self) -> Proc:
        value = f"{self.impl}-{next(self.count)}"
        argv = cli(self.impl, self.endpoints, "elect", self.name, value, ttl=self.ttl)
        return Proc(argv, f"{self.impl}-elect-ttl{self.ttl}")

    async def start(self) -> None:
        await self.etcd.clear(self.name)
        self.leader = self._spawn()
        await self.leader.wait_line(is_key_of(self.name), timeout=30)
        await self.refill()

    async def refill(self, timeout: float = 30.0) -> None:
        """Once the old leader's key is gone: a new successor, its watch in place."""
        await self.etcd.wait_count(self.name, 1, timeout=timeout)
        self.successor = self._spawn()
        await self.etcd.wait_count(self.name, 2)
        await asyncio.sleep(SETTLE)

    async def hand_over(self, sig: int, timeout: float = 30.0) -> float:
        """Signal the leader: the time until the successor prints its key line. Afterwards
        the successor is the leader, and the old leader has exited (or was killed)."""
        assert self.leader is not None and self.successor is not None
        t0 = time.monotonic()
        self.leader.signal(sig)
        try:
            t1, _, _ = await self.successor.wait_line(is_key_of(self.name), timeout=timeout)
        finally:
            old, self.leader, self.successor = self.leader, self.successor, None
            await old.wait_exit(10)
            old.kill()
        return t1 - t0

    async def trial(self, series: Series) -> float:
        """A graceful hand-off's latency; the unary requests etcd received for it go to
        ``series``. Counted from just before the SIGINT until the old leader has exited (its
        resign and exit included) and the successor has printed; nothing else sends unary
        requests meanwhile: the other chain is idle, and the driver waits."""
        urls = [f"http://{e}" for e in self.endpoints]
        before = await asyncio.to_thread(unary_requests, urls)
        latency = await self.hand_over(signal.SIGINT)
        await asyncio.sleep(SETTLE)
        requests: Counter[str] = await asyncio.to_thread(unary_requests, urls)
        requests.subtract(before)
        await self.refill()
        series.requests.append(+requests)
        return latency

    async def close(self) -> None:
        for p in (self.successor, self.leader):
            if p is not None:
                await p.stop()
        await self.etcd.clear(self.name)


async def process_level(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    series = {ETCDCTL: Series("etcdctl elect"), GEEH: Series("geeh elect")}
    chains = {impl: Chain(impl, endpoints, f"bench-handoff-{impl}", etcd) for impl in series}
    try:
        for chain in chains.values():
            await chain.start()
        for impl in rotation(cfg.n(25, 6), [ETCDCTL, GEEH]):
            if not await attempt(series[impl], impl, chains[impl].trial(series[impl])):
                await chains[impl].close()
                await chains[impl].start()
    finally:
        for chain in chains.values():
            await chain.close()
    return series


async def _stamped(aw: Awaitable[Any]) -> tuple[float, Any]:
    result = await aw
    return time.monotonic(), result


async def in_process(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    name, floor_key = "bench-inproc", b"bench-floor/key"
    series = {
        "resign": Series("gee-h resign -> campaign returns"),
        "floor": Series("floor: Delete + watch event (gee-h transport)"),
        "floor-go": Series("floor: Delete + `etcdctl watch` prints"),
    }
    await etcd.clear(name)
    async with geeh.Client(endpoints) as a, geeh.Client(endpoints) as b:
        clients, serial = [a, b], itertools.count()
        leadership = await a.election(name).campaign(b"a", ttl=10)

        async def resign() -> float:
            nonlocal leadership
            k = next(serial)
            waiting = asyncio.ensure_future(
                _stamped(clients[1].election(name).campaign(f"v{k}", ttl=10))
            )
            await etcd.wait_count(name, 2)
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await leadership.resign()
            t1, leadership = await waiting
            clients.reverse()
            return t1 - t0

        async def floor() -> float:
            revision = await etcd.put(floor_key)
            w = b.core.watches.watch(floor_key, start_revision=revision + 1)
            got = asyncio.ensure_future(_stamped(w.next()))
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await etcd.delete(floor_key)
            t1, _ = await got
            w.cancel()
            return t1 - t0

        async def floor_go() -> float:
            await etcd.put(floor_key)
            await asyncio.sleep(0.05)
            start = len(watcher.lines)
            t0 = time.monotonic()
            await etcd.delete(floor_key)
            t1, _, _ = await watcher.wait_line(lambda line: line == b"DELETE", start)
            return t1 - t0

        trials: dict[str, Callable[[], Awaitable[float]]]
        trials = {"resign": resign, "floor": floor, "floor-go": floor_go}
        watcher = Proc(cli(ETCDCTL, endpoints, "watch", floor_key.decode()), "etcdctl-watch")
        try:
            await asyncio.sleep(0.5)
            for kind in rotation(cfg.n(120, 30), list(trials)):
                series[kind].add(await trials[kind]())
        finally:
            await watcher.stop()
            await leadership.resign()
    await etcd.clear(name)
    await etcd.delete(floor_key)
    return series


async def crash(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[int, Series]:
    series = {ttl: Series(f"TTL {ttl} s") for ttl in (2, 5)}

    async def chain(ttl: int, trials: int) -> None:
        chain = Chain(GEEH, endpoints, f"bench-crash-ttl{ttl}", etcd, ttl=ttl)
        try:
            await chain.start()
            for _ in range(trials):
                # Let a keepalive or two pass, so the kill lands at a random point in the cycle.
                await asyncio.sleep(0.1 + (time.monotonic() % 1.0) * ttl / 3)
                trial = chain.hand_over(signal.SIGKILL, timeout=ttl + 30)
                await attempt(series[ttl], f"crash ttl={ttl}", trial)
                await chain.refill(timeout=ttl + 30)
        finally:
            await chain.close()

    await asyncio.gather(chain(2, cfg.n(16, 4)), chain(5, cfg.n(10, 2)))
    return series

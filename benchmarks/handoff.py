"""1. Graceful hand-off: the leader resigns until the successor knows it leads.

(a) process level: SIGINT to a leader process (``geeh elect`` vs ``etcdctl elect``) until the
    successor process (the same kind) prints its key line. Interleaved: one reference trial,
    one gee-h trial, order swapped every pair.
(b) in-process: ``await leadership.resign()`` until the waiting candidate's ``campaign``
    returns (two Clients in one event loop), vs the floor: one Delete commit plus one watch
    event delivered, with gee-h's own transport and watch stream, and with ``etcdctl watch``.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from typing import Any

import geeh
from geeh.testing import find_etcdctl

from .common import (
    ETCDCTL,
    GEEH,
    Config,
    Etcd,
    Proc,
    Series,
    elect_argv,
    is_key_of,
    unary_requests,
)

SETTLE = 0.4  # after the successor's key exists: let it finish setting up its watch


class Chain:
    """A leader process and a waiting successor process of one kind, replenished per trial."""

    def __init__(self, impl: str, endpoints: list[str], name: str, etcd: Etcd, ttl: int = 10):
        self.impl = impl
        self.endpoints = endpoints
        self.name = name
        self.etcd = etcd
        self.ttl = ttl
        self.count = itertools.count()
        self.leader: Proc | None = None
        self.successor: Proc | None = None

    def _spawn(self) -> Proc:
        value = f"{self.impl}-{next(self.count)}"
        argv = elect_argv(self.impl, self.endpoints, self.name, value, ttl=self.ttl)
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

    async def trial(self) -> tuple[float, Counter[str]]:
        """A graceful hand-off's latency, and the unary requests etcd received for it.

        Counted from just before the SIGINT until the old leader has exited (its resign and
        exit included) and the successor has printed; nothing else sends unary requests
        meanwhile: the other chain is idle, and the driver waits.
        """
        urls = [f"http://{e}" for e in self.endpoints]
        before = await asyncio.to_thread(unary_requests, urls)
        latency = await self.hand_over(signal.SIGINT)
        await asyncio.sleep(SETTLE)
        requests = await asyncio.to_thread(unary_requests, urls)
        requests.subtract(before)
        await self.refill()
        return latency, +requests

    async def close(self) -> None:
        for p in (self.successor, self.leader):
            if p is not None:
                await p.stop()
        await self.etcd.clear(self.name)


async def process_level(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    pairs = cfg.n(25, 6)
    series = {ETCDCTL: Series("etcdctl elect"), GEEH: Series("geeh elect")}
    chains = {impl: Chain(impl, endpoints, f"bench-handoff-{impl}", etcd) for impl in series}
    try:
        for chain in chains.values():
            await chain.start()
        for k in range(pairs):
            order = [ETCDCTL, GEEH] if k % 2 == 0 else [GEEH, ETCDCTL]
            for impl in order:
                try:
                    latency, requests = await chains[impl].trial()
                    series[impl].add(latency)
                    series[impl].requests.append(requests)
                except (TimeoutError, RuntimeError) as err:
                    print(f"    {impl} trial failed: {err}")
                    series[impl].failures += 1
                    await chains[impl].close()
                    await chains[impl].start()
    finally:
        for chain in chains.values():
            await chain.close()
    return series


# -- in-process ---------------------------------------------------------------------------------


async def _stamped(aw: Any) -> tuple[float, Any]:
    result = await aw
    return time.monotonic(), result


async def in_process(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    rounds = cfg.n(120, 30)
    name = "bench-inproc"
    series = {
        "resign": Series("gee-h resign -> campaign returns"),
        "floor": Series("floor: Delete + watch event (gee-h transport)"),
        "floor-go": Series("floor: Delete + `etcdctl watch` prints"),
    }
    await etcd.clear(name)
    floor_key = b"bench-floor/key"
    watcher: Proc | None = None
    async with geeh.Client(endpoints) as a, geeh.Client(endpoints) as b:
        clients = [a, b]
        leadership = await a.election(name).campaign(b"a", ttl=10)
        leader_side = 0
        try:
            watcher = Proc(
                [find_etcdctl(), f"--endpoints={','.join(endpoints)}", "watch", floor_key.decode()],
                "etcdctl-watch",
            )
            await asyncio.sleep(0.5)
            for k in range(rounds):
                kinds = ["resign", "floor", "floor-go"]
                shift = k % 3
                for kind in kinds[shift:] + kinds[:shift]:
                    if kind == "resign":
                        other = clients[1 - leader_side]
                        waiting = asyncio.ensure_future(
                            _stamped(other.election(name).campaign(f"v{k}", ttl=10))
                        )
                        await etcd.wait_count(name, 2)
                        await asyncio.sleep(0.05)
                        t0 = time.monotonic()
                        await leadership.resign()
                        t1, leadership = await waiting
                        leader_side = 1 - leader_side
                        series[kind].add(t1 - t0)
                    elif kind == "floor":
                        revision = await etcd.put(floor_key)
                        w = b.core.watches.watch(floor_key, start_revision=revision + 1)
                        got = asyncio.ensure_future(_stamped(w.next()))
                        await asyncio.sleep(0.05)
                        t0 = time.monotonic()
                        await etcd.delete(floor_key)
                        t1, _ = await got
                        w.cancel()
                        series[kind].add(t1 - t0)
                    else:
                        await etcd.put(floor_key)
                        start = len(watcher.lines)
                        await asyncio.sleep(0.05)
                        start = len(watcher.lines)
                        t0 = time.monotonic()
                        await etcd.delete(floor_key)
                        t1, _, _ = await watcher.wait_line(lambda line: line == b"DELETE", start)
                        series[kind].add(t1 - t0)
        finally:
            if watcher is not None:
                await watcher.stop()
            await leadership.resign()
    await etcd.clear(name)
    await etcd.delete(floor_key)
    return series

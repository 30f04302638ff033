"""4b. A member switch with many waiting candidates on one client (3-member etcd).

The driver reports the client's member failed (``Transport.fail``, as the transport does on a
timeout), then the leader resigns at once: time until the successor's campaign returns, with
10 and 1000 waiting on a client, interleaved with plain hand-offs as the baseline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import geeh

from .common import Config, Etcd, Series


class Queue:
    """One election: a leader and N waiting candidates, all in this process, on one Client or
    round-robin over several."""

    def __init__(self, clients: list[geeh.Client], etcd: Etcd, name: str, waiting: int) -> None:
        self.clients, self.etcd, self.name, self.waiting = clients, etcd, name, waiting
        self.won: asyncio.Queue[tuple[float, geeh.Leadership]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.serial = self.extra_wins = 0
        self.leadership: geeh.Leadership | None = None

    def add(self) -> None:
        client = self.clients[self.serial % len(self.clients)]
        self.serial += 1
        value = f"w{self.serial}"

        async def candidate() -> None:
            leadership = await client.election(self.name).campaign(value, ttl=60)
            self.won.put_nowait((time.monotonic(), leadership))

        task = asyncio.ensure_future(candidate())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        await self.etcd.clear(self.name)
        self.add()
        _, self.leadership = await self.won.get()
        # Join in batches: 1000 campaigns at once can push a request past the 2 s attempt
        # timeout on a loaded machine, and the client then leaves a healthy member.
        for start in range(0, self.waiting, 100):
            for _ in range(min(100, self.waiting - start)):
                self.add()
            await self.etcd.wait_count(self.name, min(self.waiting, start + 100) + 1, timeout=120)

    async def handoff(self, t0: float | None = None, profiler: Any = None) -> float:
        """Resign and wait for the successor; the latency from ``t0`` (default: now). A
        profiler given runs from the resign until the successor has won."""
        assert self.leadership is not None
        t0 = time.monotonic() if t0 is None else t0
        if profiler is not None:
            profiler.start()
        await self.leadership.resign()
        t1, self.leadership = await self.won.get()
        if profiler is not None:
            profiler.stop()
        while not self.won.empty():  # two leaders at once: counted as a failure
            self.extra_wins += 1
            _, extra = self.won.get_nowait()
            await extra.resign()
        self.add()
        await self.etcd.wait_count(self.name, self.waiting + 1)
        return t1 - t0

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.leadership is not None:
            await self.leadership.resign()
        await self.etcd.clear(self.name)


def _stamp_creations(hub: Any, stamps: list[float]) -> None:
    """Observe one client's watch hub: stamp every "created" confirmation it receives.

    Wraps ``received`` on this hub instance only, and only observes.
    """
    original = hub.received

    def received(response: Any) -> None:
        if response.created:
            stamps.append(time.monotonic())
        original(response)

    hub.received = received


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Any]:
    """Latency series by label; per queue length, after each switch: how many watch
    creations etcd had confirmed when the successor won, and how many were re-created."""
    series: dict[str, Series] = {}
    before_win: dict[int, list[int]] = {}
    recreated: dict[int, list[int]] = {}
    async with geeh.Client(endpoints) as small, geeh.Client(endpoints) as large:
        clients = {10: small, 1000: large}
        stamps: dict[int, list[float]] = {n: [] for n in clients}
        for n, c in clients.items():
            _stamp_creations(c.core.watches, stamps[n])
        queues = {n: Queue([c], etcd, f"bench-switch-{n}", n) for n, c in clients.items()}
        try:
            for q in queues.values():
                await q.start()
            await asyncio.sleep(1.0)
            for n, switch in [(n, s) for _ in range(cfg.n(8, 2)) for n in queues for s in (0, 1)]:
                label = f"{n} waiting, {'right after a member switch' if switch else 'no switch'}"
                await asyncio.sleep(0.3)
                transport = clients[n].core.transport
                stamps[n].clear()
                t0 = time.monotonic()
                if switch:
                    transport.fail(transport.endpoint, "benchmark: member switch")
                latency = await queues[n].handoff(t0)
                series.setdefault(label, Series(label)).add(latency)
                # After a switch the client re-creates every watch, and etcd catches the new
                # ones up: let that finish before the next trial.
                await asyncio.sleep(2.0 if switch else 0.3)
                if switch:
                    won = sum(1 for t in stamps[n] if t <= t0 + latency)
                    before_win.setdefault(n, []).append(won)
                    recreated.setdefault(n, []).append(len(stamps[n]))
        finally:
            for n, q in queues.items():
                # Two leaders at once count as failures (on the queue's first series).
                first = next((s for label, s in series.items() if label.startswith(f"{n} ")), None)
                if first is not None:
                    first.failures += q.extra_wins
                await q.close()
    return {"latency": series, "created before the win": before_win, "created": recreated}

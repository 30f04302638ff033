"""6. Profiles (pyinstrument) of gee-h's hand-off path, to find where time goes.

All candidates of one election on one Client in this process (as in one service process);
the profiler runs only inside each hand-off window, from ``resign()`` until the successor's
``campaign`` returns, sampling the whole thread every 100 us (async_mode disabled: the time
the event loop spends waiting in epoll shows as such). Run with 1 and with many waiting
candidates; the text trees are saved in benchmarks/results/.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import geeh

from .common import RESULTS, Config, Etcd, Series


async def handoffs(
    endpoints: list[str], etcd: Etcd, waiting: int, rounds: int, out_name: str
) -> dict[str, Any]:
    from pyinstrument import Profiler

    name = f"bench-profile-{waiting}"
    await etcd.clear(name)
    won: asyncio.Queue[tuple[float, geeh.Leadership]] = asyncio.Queue()
    latency = Series(f"{waiting} waiting, profiled")
    profiler = Profiler(interval=0.0001, async_mode="disabled")
    async with geeh.Client(endpoints) as client:
        election = client.election(name)
        tasks: set[asyncio.Task[None]] = set()

        async def candidate(n: int) -> None:
            leadership = await election.campaign(f"p{n}", ttl=60)
            won.put_nowait((time.monotonic(), leadership))

        def add(n: int) -> None:
            task = asyncio.ensure_future(candidate(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        add(0)
        _, leadership = await won.get()
        for i in range(waiting):
            add(i + 1)
        await etcd.wait_count(name, waiting + 1, timeout=300)
        await asyncio.sleep(0.5 + waiting / 1000)
        serial = waiting + 1
        try:
            for _ in range(rounds):
                t0 = time.monotonic()
                profiler.start()
                await leadership.resign()
                t1, leadership = await won.get()
                profiler.stop()
                latency.add(t1 - t0)
                add(serial)
                serial += 1
                await etcd.wait_count(name, waiting + 1)
                await asyncio.sleep(0.05)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await leadership.resign()
    await etcd.clear(name)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    await asyncio.to_thread(_save, out_name, text)
    return {"waiting": waiting, "latency": latency, "text": text, "file": out_name}


def _save(name: str, text: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name), "w") as f:
        f.write(text)


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> list[dict[str, Any]]:
    rounds = cfg.n(60, 20)
    out = []
    for waiting in (1, 1000):
        print(f"    profiling hand-offs with {waiting} waiting")
        out.append(
            await handoffs(endpoints, etcd, waiting, rounds, f"profile-handoff-{waiting}.txt")
        )
    return out

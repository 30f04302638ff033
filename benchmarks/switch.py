"""4b. A member switch with many waiting candidates on one client.

When a client leaves an etcd member (it failed, or answered too slowly), every watch of the
client moves to the next member, and until the watches are re-established no waiting candidate
can see its predecessor go. This measures a hand-off that starts right after the switch: the
driver reports the pinned member failed (``Transport.fail``, what the transport itself does on
a timeout), then the leader resigns at once; time until the successor's campaign returns. With
10 and with 1000 waiting candidates on a client (two clients, one election each), interleaved,
on a 3-member cluster; plain hand-offs (no switch) alternate with them as the baseline.
"""

from __future__ import annotations

import asyncio
import time

import geeh

from .common import Config, Etcd, Series
from .whatif import Queue


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    rounds = cfg.n(8, 2)
    series: dict[str, Series] = {}
    async with geeh.Client(endpoints) as small, geeh.Client(endpoints) as large:
        clients = {10: small, 1000: large}
        queues = {n: Queue(c, etcd, f"bench-switch-{n}", n, set()) for n, c in clients.items()}
        try:
            for q in queues.values():
                await q.start()
            await asyncio.sleep(1.0)
            for _ in range(rounds):
                for n, q in queues.items():
                    for switch in (False, True):
                        what = "right after a member switch" if switch else "no switch"
                        label = f"{n} waiting, {what}"
                        s = series.setdefault(label, Series(label))
                        await asyncio.sleep(0.3)
                        transport = clients[n]._transport
                        t0 = time.monotonic()
                        if switch:
                            transport.fail(transport.endpoint, "benchmark: member switch")
                        s.add(await q.handoff(t0))
                        # After a switch the client re-creates every watch, and etcd catches
                        # the new ones up: let that finish before the next trial.
                        await asyncio.sleep(2.0 if switch else 0.3)
        finally:
            for q in queues.values():
                await q.close()
    return series

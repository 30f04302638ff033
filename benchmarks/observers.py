"""2. Observer notification: from a leader change until an observer reports the new leader.

Every kind of observer watches an election of its own, all running for the whole benchmark;
a trial changes the leader of one of them only (the driver deletes the leader key, so the
next-oldest key leads), rotating over the kinds, so exactly one observer wakes per trial:

- ``etcdctl elect -l`` (the reference), a process: time until it prints the new key line;
- ``geeh elect --listen``, a process: the same;
- ``election.observe()`` in the driver's event loop, on a Client of its own;
- the floor: a raw gee-h watch event for the same Delete.
"""

from __future__ import annotations

import asyncio
import time

import geeh
from geeh.keys import election_prefix, prefix_end

from .common import ETCDCTL, GEEH, Config, Etcd, Proc, Series, listen_argv

SETTLE = 0.05

KINDS = [ETCDCTL, GEEH, "in-process", "floor"]
LABELS = {
    ETCDCTL: "etcdctl elect -l (process)",
    GEEH: "geeh elect --listen (process)",
    "in-process": "gee-h observe() in-process",
    "floor": "floor: Delete + raw watch event",
}


class Target:
    """One election with a leader key and one waiting key, and one observer of it."""

    def __init__(self, kind: str, etcd: Etcd) -> None:
        self.kind = kind
        self.name = f"bench-observe-{kind}"
        self.prefix = election_prefix(self.name)
        self.etcd = etcd
        self.n = 0
        self.keys: list[bytes] = []
        self.proc: Proc | None = None
        self.seen: list[tuple[float, bytes]] = []
        self.event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def add_key(self) -> None:
        key = self.prefix + f"{0x1000 + self.n:x}".encode()
        self.n += 1
        await self.etcd.put(key, b"value-" + key[-4:])
        self.keys.append(key)

    async def start(self, endpoints: list[str], client: geeh.Client) -> None:
        await self.etcd.clear(self.name)
        await self.add_key()
        await self.add_key()
        first = self.keys[0]
        if self.kind in (ETCDCTL, GEEH):
            self.proc = Proc(listen_argv(self.kind, endpoints, self.name), f"{self.kind}-listen")
            await self.proc.wait_line(lambda line: line == first, timeout=30)
        elif self.kind == "in-process":
            self.task = asyncio.ensure_future(self._observe(client))
            await self._wait_seen(first, 0)
        else:
            self.task = asyncio.ensure_future(self._raw(client))
        await asyncio.sleep(0.3)

    async def _observe(self, client: geeh.Client) -> None:
        async with client.election(self.name).observe() as changes:
            async for leader in changes:
                if leader is not None:
                    self.seen.append((time.monotonic(), leader.key))
                    self.event.set()

    async def _raw(self, client: geeh.Client) -> None:
        revision = await self.etcd.revision()
        w = client.core.watches.watch(
            self.prefix, range_end=prefix_end(self.prefix), start_revision=revision + 1
        )
        with w:
            while True:
                batch = await w.next()
                for event in batch.events:
                    if event.type == event.DELETE:
                        self.seen.append((time.monotonic(), event.kv.key))
                        self.event.set()

    async def _wait_seen(self, key: bytes, start: int, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            self.event.clear()
            for stamp, seen in self.seen[start:]:
                if seen == key:
                    return stamp
            await asyncio.wait_for(self.event.wait(), max(0.001, deadline - time.monotonic()))

    async def trial(self) -> float:
        old, new = self.keys[0], self.keys[1]
        if self.proc is not None:
            start = len(self.proc.lines)
            t0 = time.monotonic()
            await self.etcd.delete(old)
            t1, _, _ = await self.proc.wait_line(lambda line: line == new, start, timeout=30)
        else:
            start = len(self.seen)
            t0 = time.monotonic()
            await self.etcd.delete(old)
            # The raw watch reports the Delete itself; observers report the new leader.
            t1 = await self._wait_seen(old if self.kind == "floor" else new, start)
        self.keys.pop(0)
        await self.add_key()
        return t1 - t0

    async def close(self) -> None:
        if self.proc is not None:
            await self.proc.stop()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.etcd.clear(self.name)


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    rounds = cfg.n(80, 24)
    series = {kind: Series(LABELS[kind]) for kind in KINDS}
    async with geeh.Client(endpoints) as client:
        targets = {kind: Target(kind, etcd) for kind in KINDS}
        try:
            for target in targets.values():
                await target.start(endpoints, client)
            for k in range(rounds):
                shift = k % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    await asyncio.sleep(SETTLE)
                    try:
                        series[kind].add(await targets[kind].trial())
                    except (TimeoutError, RuntimeError) as err:
                        print(f"    observer {kind} trial failed: {err}")
                        series[kind].failures += 1
        finally:
            for target in targets.values():
                await target.close()
    return series

"""6. Profiles (pyinstrument) of gee-h's hand-off path, and the wait read's cost in etcd.

All candidates on Clients in this process; the profiler samples the thread every 100 us only
inside hand-off windows (``resign()`` until the successor's ``campaign`` returns; epoll shows
as such). ``read_cost``: the Range a waiting campaign sends (``Campaign._wait``) under 10, 100
and 1000 keys, against a point read, in rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import geeh
from geeh._proto import rpc_pb2 as rpc
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import RANGE

from .common import REPO, Config, Etcd, Series, rotation
from .switch import Queue

# Where the sampled window went, by the outermost frame of these functions (not nested).
SHARES = {
    "resign": ("Leadership.resign",),
    "watch events": ("WatchHub._read", "Line.wait"),
    "wait read": ("Campaign._wait",),
    "idle in epoll": ("epoll.poll",),
}


def _shares(session: Any) -> dict[str, float]:
    """Seconds of the profiled windows spent in each group of SHARES, and the total."""
    root = session.root_frame() if session is not None else None
    out = dict.fromkeys(SHARES, 0.0)
    if root is None:
        return {**out, "total": 0.0}
    names = {name: group for group, names in SHARES.items() for name in names}

    def walk(frame: Any) -> None:
        qualified = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
        group = names.get(qualified) or names.get(frame.function)
        if group is not None:
            out[group] += frame.time
            return
        for child in frame.children:
            walk(child)

    walk(root)
    return {**out, "total": root.time}


async def handoffs(cfg: Config, endpoints: list[str], etcd: Etcd, waiting: int) -> dict[str, Any]:
    """Profiled hand-offs; on a cluster, candidates round-robin over one Client per member,
    client i pinned first to member i (leases, hence keys, from different members)."""
    from pyinstrument import Profiler

    clients = len(endpoints)
    print(f"    profiling hand-offs with {waiting} waiting, {clients} client(s)")
    name = f"profile-handoff-{waiting}{f'-{clients}-member' if clients > 1 else ''}.txt"
    latency = Series(f"{waiting} waiting, profiled")
    profiler = Profiler(interval=0.0001, async_mode="disabled")
    async with contextlib.AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(geeh.Client(endpoints[k:] + endpoints[:k]))
            for k in range(clients)
        ]
        queue = Queue(pool, etcd, f"bench-profile-{waiting}-{clients}", waiting)
        try:
            await queue.start()
            await asyncio.sleep(0.5 + waiting / 1000)
            for _ in range(cfg.n(60, 20)):
                latency.add(await queue.handoff(profiler=profiler))
                await asyncio.sleep(0.05)
        finally:
            await queue.close()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    await asyncio.to_thread(_save, cfg.out_dir, name, text)
    run = {"waiting": waiting, "clients": clients, "members": clients, "latency": latency}
    return {**run, "file": name, "shares": _shares(profiler.last_session)}


def _save(out_dir: str, name: str, text: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    # Paths relative to the repository: the results are committed, machine paths are not.
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(text.replace(REPO + os.sep, ""))


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Any]:
    """1 and 1000 waiting; on a cluster over one Client per member (keys from every member
    interleave). On a single member, also the wait read's cost."""
    runs = [await handoffs(cfg, endpoints, etcd, waiting) for waiting in (1, 1000)]
    if len(endpoints) > 1:
        return {"runs": runs}
    return {"runs": runs, "reads": await read_cost(cfg, etcd)}


async def read_cost(cfg: Config, etcd: Etcd) -> dict[str, Series]:
    """Round-trip time of the wait read by number of keys under the prefix, vs a point read."""
    sizes = (10, 100, 1000)
    requests: dict[str, rpc.RangeRequest] = {}
    names = [f"bench-read-{n}" for n in sizes]
    try:
        for n, name in zip(sizes, names, strict=True):
            await etcd.clear(name)
            prefix = election_prefix(name)
            revision = 0
            for start in range(0, n, 50):
                keys = [prefix + f"{i:016x}".encode() for i in range(start, min(n, start + 50))]
                revision = max(revision, *await asyncio.gather(*map(etcd.put, keys)))
            requests[f"wait read, {n} keys"] = rpc.RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                max_create_revision=revision,
                sort_order=rpc.RangeRequest.DESCEND,
                sort_target=rpc.RangeRequest.CREATE,
                limit=3,
                keys_only=True,
            )
        requests["point read of one key"] = rpc.RangeRequest(
            key=election_prefix(names[-1]) + f"{0:016x}".encode(), keys_only=True
        )
        series = {label: Series(label) for label in requests}
        for label in rotation(cfg.n(200, 40), list(requests)):
            t0 = time.monotonic()
            await etcd.transport.call(RANGE, requests[label])
            series[label].add(time.monotonic() - t0)
    finally:
        for name in names:
            await etcd.clear(name)
    return series

"""A process holding N elections on one shared session, for the shard benchmark (shards.py).

``python -m benchmarks.shard_worker N ENDPOINTS``: campaigns in N elections at once, prints
``won SECONDS RSS_BEFORE RSS_AFTER HELD_BEFORE HELD_AFTER`` (KiB) once it leads them all, then
holds them until SIGINT or SIGTERM. HELD is RSS after glibc's ``malloc_trim(0)`` has given
freed heap back to the system: what the elections hold, without the high-water mark the
campaigns in flight left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import signal
import sys
import time

import geeh


def trimmed_rss_kib() -> int:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_kib()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(n: int, endpoints: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with geeh.Client(endpoints) as client:
        session = await client.session()
        # Warm up: one election first, so that RSS before counts the client and its streams.
        warm = await client.election("bench-shard-warm").campaign(b"v", session=session)
        gc.collect()
        before = rss_kib()
        held_before = trimmed_rss_kib()
        t0 = time.monotonic()
        held = await asyncio.gather(
            *(client.election(f"bench-shard-{i}").campaign(b"v", session=session) for i in range(n))
        )
        took = time.monotonic() - t0
        gc.collect()
        after = rss_kib()
        print(f"won {took:.4f} {before} {after} {held_before} {trimmed_rss_kib()}", flush=True)
        await stop.wait()
        del held, warm  # revoking the session at close removes every key at once


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2].split(",")))

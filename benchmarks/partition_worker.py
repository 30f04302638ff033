"""One member of the partition benchmark: gee-h shards or kazoo's SetPartitioner.

    python -m benchmarks.partition_worker geeh|kazoo ENDPOINT NAME N TTL VALUE [BOUNDARY]

Prints "joining" when it starts to join (connected), "+ S" when it starts work on shard S
and "- S" when that work stops (the driver stamps each line as it arrives), "rss KIB" when
sent "rss" on stdin, and "left" after "leave" (a graceful leave: gee-h hands its shards over,
kazoo calls finish()).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def commands(on_line: object) -> None:
    """Feed stdin lines to ``on_line`` from a thread of their own."""

    def read() -> None:
        for line in sys.stdin:
            on_line(line.strip())  # type: ignore[operator]

    threading.Thread(target=read, daemon=True).start()


async def geeh_member(endpoint: str, name: str, n: int, ttl: int, value: str) -> None:
    import geeh

    loop = asyncio.get_running_loop()
    leave = asyncio.Event()

    def on_line(line: str) -> None:
        if line == "rss":
            loop.call_soon_threadsafe(say, f"rss {rss_kib()}")
        elif line == "leave":
            loop.call_soon_threadsafe(leave.set)

    async with geeh.Client(endpoint, request_timeout=30) as client:

        async def work(shard: int, leadership: geeh.Leadership) -> None:
            say(f"+ {shard}")
            try:
                await asyncio.Event().wait()
            finally:
                say(f"- {shard}")

        commands(on_line)
        say("joining")  # the join starts now: the driver times the event from here
        run = asyncio.create_task(client.shards(name, n).run(work, value, ttl=ttl))
        await leave.wait()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        say("left")


def kazoo_member(endpoint: str, name: str, n: int, ttl: int, value: str, boundary: float) -> None:
    from kazoo.client import KazooClient

    leave = threading.Event()

    def on_line(line: str) -> None:
        if line == "rss":
            say(f"rss {rss_kib()}")
        elif line == "leave":
            leave.set()

    zk = KazooClient(hosts=endpoint, timeout=float(ttl))
    zk.start()
    commands(on_line)
    say("joining")  # the join starts now: the driver times the event from here
    partitioner = zk.SetPartitioner(
        path=f"/{name}", set=set(range(n)), time_boundary=boundary, identifier=value
    )
    held: set[int] = set()

    def release() -> None:
        for shard in sorted(held):
            say(f"- {shard}")
        held.clear()

    while True:
        if leave.is_set():
            release()
            partitioner.finish()
            break
        if partitioner.failed:
            release()
            say("failed")
            break
        if partitioner.release:
            release()
            partitioner.release_set()
        elif partitioner.acquired:
            now = set(partitioner)
            for shard in sorted(now - held):
                say(f"+ {shard}")
            held |= now
            time.sleep(0.005)  # SetPartitioner's state is polled: its watches set flags
        elif partitioner.allocating:
            partitioner.wait_for_acquire(timeout=0.1)
    zk.stop()
    zk.close()
    say("left")


def main() -> None:
    system, endpoint, name, n, ttl, value, *rest = sys.argv[1:]
    if system == "geeh":
        asyncio.run(geeh_member(endpoint, name, int(n), int(ttl), value))
    else:
        boundary = float(rest[0]) if rest else 1.0
        kazoo_member(endpoint, name, int(n), int(ttl), value, boundary)


if __name__ == "__main__":
    main()

"""A process holding many gee-h candidates of one election, driven over stdin/stdout.

Commands (one per line on stdin)::

    add N            start N more campaigns (each with its own session, as separate
                     candidates would have)
    resign KEY       resign the leadership held on KEY; prints "resigned KEY T0"
    counts           prints "counts UNARY WATCH_MSGS WATCH_RECEIVED {PATH: N}" (totals so far;
                     WATCH_RECEIVED: watch responses received; the JSON object splits UNARY
                     by gRPC method)
    mem              prints "mem RSS_BYTES TRACED_BYTES"
    quit             close the client (resigns, revokes) and exit

Events on stdout: "ready RSS_BYTES", "won KEY T1" (T1 = time.monotonic() when the campaign
returned; CLOCK_MONOTONIC is system-wide, so it compares with the driver's and other workers').

UNARY is the transport's request_count (unary attempts and streams opened). WATCH_MSGS counts
watch creates and cancels sent on the watch stream, which request_count does not see, and
WATCH_RECEIVED the responses on it: both by wrapping library methods here, without changing
the library.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
import tracemalloc
from typing import Any

import geeh
from geeh.watch import WatchHub

_counts = {"watch": 0, "received": 0}


def _instrument() -> None:
    """Count the watch stream's messages by wrapping three methods of WatchHub."""
    watch, remove, received = WatchHub.watch, WatchHub._remove, WatchHub.received

    def counted_watch(self: Any, *args: Any, **kwargs: Any) -> Any:
        _counts["watch"] += 1
        return watch(self, *args, **kwargs)

    def counted_remove(self: Any, w: Any) -> None:
        if w.watch_id in self._watches:
            _counts["watch"] += 1
        remove(self, w)

    def counted_received(self: Any, response: Any) -> None:
        _counts["received"] += 1
        received(self, response)

    WatchHub.watch = counted_watch  # type: ignore[method-assign]
    WatchHub._remove = counted_remove  # type: ignore[method-assign]
    WatchHub.received = counted_received  # type: ignore[method-assign]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    _instrument()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, sys.stdin)
    leaderships: dict[bytes, geeh.Leadership] = {}
    tasks: set[asyncio.Task[None]] = set()
    paths: collections.Counter[str] = collections.Counter()
    async with geeh.Client(args.endpoints) as client:
        client.core.transport.on_request = lambda endpoint, path: paths.update([path])
        election = client.election(args.name)
        numbers = iter(range(10**9))

        async def campaign() -> None:
            leadership = await election.campaign(f"{args.id}-{next(numbers)}", ttl=args.ttl)
            stamp = time.monotonic()
            leaderships[leadership.key] = leadership
            say(f"won {leadership.key.decode()} {stamp:.9f}")

        if args.tracemalloc:
            tracemalloc.start()
        say(f"ready {rss()}")
        while line := (await reader.readline()).decode().split():
            if line[0] == "add":
                for _ in range(int(line[1])):
                    task = asyncio.ensure_future(campaign())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            elif line[0] == "resign":
                key = line[1].encode()
                stamp = time.monotonic()
                await leaderships.pop(key).resign()
                say(f"resigned {key.decode()} {stamp:.9f}")
            elif line[0] == "counts":
                unary, by_path = (
                    client.core.transport.request_count,
                    json.dumps(paths, separators=(",", ":")),
                )
                say(f"counts {unary} {_counts['watch']} {_counts['received']} {by_path}")
            elif line[0] == "mem":
                traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
                say(f"mem {rss()} {traced}")
            elif line[0] == "quit":
                break
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--id", default="w0")
    parser.add_argument("--ttl", type=int, default=60)
    parser.add_argument("--tracemalloc", action="store_true")
    asyncio.run(main(parser.parse_args()))

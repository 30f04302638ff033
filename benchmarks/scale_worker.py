"""A process holding many gee-h candidates of one election, driven over stdin/stdout.

Commands (one per line on stdin)::

    add N            start N more campaigns (each with its own session, as separate
                     candidates would have)
    resign KEY       resign the leadership held on KEY; prints "resigned KEY T0"
    counts           prints "counts UNARY WATCH_MSGS KEEPALIVE_MSGS WATCH_RECEIVED {PATH: N}"
                     (totals so far; WATCH_RECEIVED: watch responses received; the JSON
                     object splits UNARY by gRPC method)
    mem              prints "mem RSS_BYTES TRACED_BYTES"
    quit             close the client (resigns, revokes) and exit

Events on stdout: "ready RSS_BYTES", "won KEY T1" (T1 = time.monotonic() when the campaign
returned; CLOCK_MONOTONIC is system-wide, so it compares with the driver's and other workers').

UNARY is the transport's request_count (unary attempts and streams opened). WATCH_MSGS and
KEEPALIVE_MSGS count messages sent on the two long-lived streams, which request_count does not
see; they are counted by wrapping two library methods here, without changing the library.
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
from geeh import lessor as lessor_mod
from geeh import watch as watch_mod

_counts = {"watch": 0, "keepalive": 0, "received": 0}


def _instrument() -> None:
    """Count stream messages by wrapping library methods (whichever of their names exist)."""
    hub = watch_mod.WatchHub
    original_watch = hub.watch
    original_remove = hub._remove

    def watch(self: Any, *args: Any, **kwargs: Any) -> Any:
        _counts["watch"] += 1
        return original_watch(self, *args, **kwargs)

    def remove(self: Any, w: Any) -> None:
        if w.watch_id in self._watches:
            _counts["watch"] += 1
        original_remove(self, w)

    hub.watch = watch  # type: ignore[method-assign]
    hub._remove = remove  # type: ignore[method-assign]
    for name in ("received", "_dispatch"):  # the per-response handler
        original = getattr(hub, name, None)
        if original is not None:

            def dispatch(self: Any, response: Any, _original: Any = original) -> Any:
                _counts["received"] += 1
                return _original(self, response)

            setattr(hub, name, dispatch)
            break
    lessor = lessor_mod.Lessor
    original_keepalive = lessor.keepalive

    async def keepalive(self: Any, *args: Any, **kwargs: Any) -> int:
        _counts["keepalive"] += 1
        result: int = await original_keepalive(self, *args, **kwargs)
        return result

    lessor.keepalive = keepalive  # type: ignore[method-assign]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    _instrument()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
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
        while True:
            line = (await reader.readline()).decode().split()
            if not line:
                break
            command = line[0]
            if command == "add":
                for _ in range(int(line[1])):
                    task = asyncio.ensure_future(campaign())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            elif command == "resign":
                key = line[1].encode()
                stamp = time.monotonic()
                await leaderships.pop(key).resign()
                say(f"resigned {key.decode()} {stamp:.9f}")
            elif command == "counts":
                transport = client.core.transport
                say(
                    f"counts {transport.request_count} {_counts['watch']} {_counts['keepalive']} "
                    f"{_counts['received']} " + json.dumps(dict(paths), separators=(",", ":"))
                )
            elif command == "mem":
                traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
                say(f"mem {rss()} {traced}")
            elif command == "quit":
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

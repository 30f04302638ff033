"""Fallback for ``geeh elect`` while the real CLI (``python -m geeh.cli``) is not runnable.

``python -m benchmarks.elect_cli elect NAME VALUE [--ttl S] [--endpoints A,B]``: campaign, print
the key line and the value line once elected (like ``etcdctl elect``), resign on SIGINT/SIGTERM.
``python -m benchmarks.elect_cli elect --listen NAME``: print key and value lines for every new
leader (like ``etcdctl elect -l``). Uses only the library's public API.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import geeh


def _write(key: bytes, value: bytes) -> None:
    sys.stdout.buffer.write(key + b"\n" + value + b"\n")
    sys.stdout.flush()


async def _elect(args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with geeh.Client(args.endpoints) as client:
        election = client.election(args.name)
        campaign = asyncio.ensure_future(election.campaign(args.value, ttl=args.ttl))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({campaign, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not campaign.done():
            campaign.cancel()
            return 0
        stopped.cancel()
        leadership = campaign.result()
        _write(leadership.key, leadership.value)
        lost = asyncio.ensure_future(leadership.lost.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        stopped.cancel()
        if leadership.lost.is_set() and leadership.lost.reason is not None:
            print(f"elect: lost leadership: {leadership.lost.reason}", file=sys.stderr)
            return 3
        await leadership.resign()
    return 0


async def _listen(args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with geeh.Client(args.endpoints) as client:

        async def follow() -> None:
            async with client.election(args.name).observe() as changes:
                async for leader in changes:
                    if leader is not None:
                        _write(leader.key, leader.value)

        task = asyncio.ensure_future(follow())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stopped.cancel()
    return 0


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.listen:
        return await _listen(args, stop)
    return await _elect(args, stop)


def main() -> int:
    parser = argparse.ArgumentParser(prog="elect_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    elect = sub.add_parser("elect")
    elect.add_argument("name")
    elect.add_argument("value", nargs="?")
    elect.add_argument("-l", "--listen", action="store_true")
    elect.add_argument("--ttl", type=int, default=10)
    elect.add_argument("--endpoints", default="127.0.0.1:2379")
    args = parser.parse_args()
    if not args.listen and args.value is None:
        parser.error("VALUE is required without --listen")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())

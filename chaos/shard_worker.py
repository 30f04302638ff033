"""A sharded member (chaos sharded mode): while it leads a shard, it acts on that shard.

Each action, per shard led: read the clock, check ``is_leader``, log the attempt, make a
fenced write of ``token:member:seq`` to the shard's register, read the clock; the interval and
outcome go to the member's JSONL history. SIGTERM is a graceful leave: the member hands its
shards over, then exits 0. ``--broken`` writes unfenced and does not stop on a move.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path

import geeh

from . import compat
from .history import Log
from .proc import run_worker, worker_parser

DATA = "chaos-shards-data/"


class Member:
    def __init__(self, args: argparse.Namespace) -> None:
        self.id: str = args.id
        self.interval: float = args.interval
        self.broken: bool = args.broken
        self.log = Log(Path(args.out))
        self.seq = 0

    async def work(self, shard: int, leadership: geeh.Leadership) -> None:
        self.log.write("win", shard=shard, token=leadership.token, valid=leadership.is_leader)
        try:
            while True:
                if not await self.act(shard, leadership):
                    return
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            if not self.broken:
                raise
            while True:  # the broken member ignores that the shard moved
                await self.act(shard, leadership)
                await asyncio.sleep(self.interval)
        finally:
            self.log.write("end", shard=shard, token=leadership.token)

    async def act(self, shard: int, leadership: geeh.Leadership) -> bool:
        start = time.monotonic()
        if not self.broken and not leadership.is_leader:
            return False
        token = leadership.token
        self.seq += 1
        value = f"{token}:{self.id}:{self.seq}"
        self.log.write("try", shard=shard, token=token, value=value, t=start)
        put = compat.unfenced_put if self.broken else compat.fenced_put
        try:
            revision = await put(leadership, f"{DATA}{shard}".encode(), value.encode())
        except geeh.NotLeader:
            self.log.write("act", shard=shard, token=token, value=value, start=start,
                           result="rejected")  # fmt: skip
            return False
        except geeh.GeehError as err:
            self.log.write("act", shard=shard, token=token, value=value, start=start,
                           result=f"unknown: {err}")  # fmt: skip
            return True
        self.log.write("act", shard=shard, token=token, value=value, start=start,
                       end=time.monotonic(), rev=revision, result="ok")  # fmt: skip
        return True

    async def main(self, endpoints: list[str], name: str, count: int, ttl: int) -> None:
        self.log.write("start", pid=os.getpid())
        try:
            while True:
                try:
                    async with geeh.Client(endpoints) as client:
                        # The value names this incarnation: a restarted member is a new one.
                        value = f"{self.id}.{os.getpid()}"
                        await client.shards(name, count).run(self.work, value, ttl=ttl)
                except geeh.GeehError as err:
                    logging.getLogger("chaos.shard_worker").warning("%s; connecting again", err)
                    await asyncio.sleep(0.5)
        finally:
            self.log.write("stop")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = worker_parser("python -m chaos.shard_worker")
    parser.add_argument("--name", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.25)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    member = Member(args)
    endpoints = args.endpoints.split(",")
    run_worker(args, lambda: member.main(endpoints, args.name, args.count, args.ttl))


if __name__ == "__main__":
    main()

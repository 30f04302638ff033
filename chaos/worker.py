"""A worker: a candidate that, while it leads, acts and writes its token to the register.

Every action, while leading: read the clock, check ``is_leader``, log the attempt, do a
fenced write of ``token:worker:seq`` to the register, read the clock. The action's interval
(start before the check, end after the write's answer) and the write's outcome go to the
worker's JSONL history, with each win and loss.

``--broken`` is a worker written the way the checker must catch: it never checks
``is_leader``, writes without the fence, and does not stop when its leadership is lost (like
work in a thread that nobody tells to stop): it goes on until the process is stopped.
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


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.id: str = args.id
        self.register: bytes = args.register.encode()
        self.ttl: int = args.ttl
        self.interval: float = args.interval
        self.broken: bool = args.broken
        self.log = Log(Path(args.out))
        self.seq = 0
        self.stopping = False  # set on SIGTERM

    def elected(self, leadership: geeh.Leadership) -> None:
        t = time.monotonic()  # before the check: is_leader held at some moment after t
        self.log.write("win", token=leadership.token, t=t, valid=leadership.is_leader)

    def lost(self, leadership: geeh.Leadership) -> None:
        reason = leadership.lost.reason
        self.log.write("lost", token=leadership.token, reason=repr(reason))

    async def work(self, leadership: geeh.Leadership) -> None:
        try:
            while True:
                if not await self.act(leadership):
                    return
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            if not self.broken:
                raise
            while not self.stopping:  # the broken worker ignores the loss
                await self.act(leadership)
                await asyncio.sleep(self.interval)
            raise

    async def act(self, leadership: geeh.Leadership) -> bool:
        """One action; False when leadership is over."""
        start = time.monotonic()
        if not self.broken and not leadership.is_leader:
            return False
        token = leadership.token
        self.seq += 1
        value = f"{token}:{self.id}:{self.seq}"
        self.log.write("try", token=token, value=value, t=start)
        put = compat.unfenced_put if self.broken else compat.fenced_put
        try:
            revision = await put(leadership, self.register, value.encode())
        except geeh.NotLeader:
            self.log.write("act", token=token, value=value, start=start, result="rejected")
            return False
        except geeh.GeehError as err:
            # The write may or may not have been applied: the checker allows both.
            self.log.write("act", token=token, value=value, start=start, result=f"unknown: {err}")
            return True
        end = time.monotonic()
        self.log.write(
            "act", token=token, value=value, start=start, end=end, rev=revision, result="ok"
        )
        return True

    async def main(self, endpoints: list[str], election: str) -> None:
        self.log.write("start", pid=os.getpid())
        try:
            while True:
                try:
                    async with geeh.Client(endpoints, discover=False) as client:
                        await compat.run_as_leader(
                            client.election(election),
                            self.work,
                            self.id,
                            ttl=self.ttl,
                            on_elected=self.elected,
                            on_lost=self.lost,
                        )
                except geeh.GeehError as err:
                    logging.getLogger("chaos.worker").warning("%s; connecting again", err)
                    await asyncio.sleep(0.5)
        finally:
            self.log.write("stop")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = worker_parser("python -m chaos.worker")
    parser.add_argument("--election", required=True)
    parser.add_argument("--register", required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    worker = Worker(args)

    def stopping() -> None:
        worker.stopping = True

    run_worker(args, lambda: worker.main(args.endpoints.split(","), args.election), stopping)


if __name__ == "__main__":
    main()

"""An observer: logs every leader ``election.observe()`` reports (None: no leader), with time."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import geeh

from .history import Log
from .proc import die_with_parent


async def observe(endpoints: list[str], election: str, log: Log) -> None:
    async with geeh.Client(endpoints) as client:
        async for leader in client.election(election).observe():
            if leader is None:
                log.write("leader", token=None, value=None)
            else:
                log.write("leader", token=leader.token, value=leader.value_str)


async def _serve(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    log = Log(Path(args.out))
    log.write("start", pid=os.getpid())
    with contextlib.suppress(asyncio.CancelledError):
        await observe(args.endpoints.split(","), args.election, log)
    log.write("stop")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.observer")
    parser.add_argument("--endpoints", required=True, help="comma-separated host:port")
    parser.add_argument("--election", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()

"""A sharded member in a process of its own, for tests that SIGKILL it.

    python tests/support/shard_member.py ENDPOINT NAME COUNT VALUE TTL

Prints "joined" once its member key is written, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

import geeh


async def main() -> None:
    endpoint, name, count, value, ttl = sys.argv[1:6]
    async with geeh.Client(endpoint) as client:
        shards = client.shards(name, int(count))

        async def work(shard: int, leadership: geeh.Leadership) -> None:
            await leadership.put(f"{name}-data/{shard}", value)
            await asyncio.Event().wait()

        run = asyncio.ensure_future(shards.run(work, value, ttl=int(ttl)))
        while True:
            view = await shards.view()
            if value.encode() in view.values.values():
                break
            await asyncio.sleep(0.02)
        print("joined", flush=True)
        await run


if __name__ == "__main__":
    asyncio.run(main())

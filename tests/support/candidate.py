"""A candidate in a process of its own, so tests can SIGKILL a leader.

Usage: python candidate.py ENDPOINTS NAME VALUE TTL
Prints "elected KEY TOKEN" once elected, then holds leadership until killed.
"""

from __future__ import annotations

import asyncio
import sys

import geeh


async def main(endpoints: str, name: str, value: str, ttl: int) -> None:
    async with geeh.Client(endpoints) as client:
        leadership = await client.election(name).campaign(value, ttl=ttl)
        print("elected", leadership.key.decode(), leadership.token, flush=True)
        await leadership.lost


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))

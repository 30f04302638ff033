"""Direct etcd reads and writes for tests, outside the election recipe under test."""

from __future__ import annotations

import geeh
from geeh._proto import rpc_pb2
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import DELETE, LEASE_REVOKE, RANGE
from support.wait import eventually


async def keys(client: geeh.Client, name: str) -> list[bytes]:
    """Every key under the election's prefix."""
    prefix = election_prefix(name)
    response = await client.core.transport.call(
        RANGE, rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), keys_only=True)
    )
    return [kv.key for kv in response.kvs]


async def left(client: geeh.Client, name: str, n: int) -> None:
    """Wait until exactly ``n`` candidates have keys in the election."""

    async def exactly() -> bool:
        return len(await keys(client, name)) == n

    await eventually(exactly, what=f"{n} candidates left in {name}")


async def joined(client: geeh.Client, name: str, n: int) -> None:
    """Wait until ``n`` candidates have keys in the election (join order is create order)."""

    async def enough() -> bool:
        return len(await keys(client, name)) >= n

    await eventually(enough, what=f"{n} candidates to join {name}")


async def revoke(client: geeh.Client, lease: int) -> None:
    await client.core.transport.call(LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=lease))


async def delete(client: geeh.Client, key: bytes) -> None:
    await client.core.transport.call(DELETE, rpc_pb2.DeleteRangeRequest(key=key))

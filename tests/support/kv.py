"""Direct etcd reads and writes for tests, outside the election recipe under test."""

from __future__ import annotations

import asyncio

import geeh
from geeh._proto import rpc_pb2
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import DELETE, LEASE_REVOKE, RANGE
from geeh.testing import LocalEtcdCluster
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


async def watches_caught_up(etcd: LocalEtcdCluster, *clients: geeh.Client) -> None:
    """Wait until member 0 serves every watch of ``clients``, none from its sync loop.

    gee-h creates each watch one revision early (see watch.py), so etcd serves it from its
    sync loop until it has caught up, and events reach two such watches in no set order.
    """

    async def caught_up() -> bool:
        wanted = sum(c.core.sizes()["watches"] for c in clients)
        total, slow = await asyncio.gather(
            asyncio.to_thread(etcd.metrics, 0, "etcd_debugging_mvcc_watcher_total"),
            asyncio.to_thread(etcd.metrics, 0, "etcd_debugging_mvcc_slow_watcher_total"),
        )
        return bool(total and slow is not None) and sum(total) >= wanted and not sum(slow)

    await eventually(caught_up, what="etcd to serve the watches in step")


async def revoke(client: geeh.Client, lease: int) -> None:
    await client.core.transport.call(LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=lease))


async def delete(client: geeh.Client, key: bytes) -> None:
    await client.core.transport.call(DELETE, rpc_pb2.DeleteRangeRequest(key=key))

"""The transport's rules at its edges: whose deadline passed, calls cut by close, close cut off."""

from __future__ import annotations

import asyncio

import pytest
from support.wait import within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import LEASE_REVOKE, RANGE
from geeh.testing import LocalEtcdCluster, TcpProxy


def proxies(etcd: LocalEtcdCluster, n: int) -> list[TcpProxy]:
    host, port = etcd.endpoints[0].rsplit(":", 1)
    return [TcpProxy(host, int(port)).start() for _ in range(n)]


async def test_a_callers_short_timeout_does_not_move_the_pin(etcd: LocalEtcdCluster) -> None:
    """A request given less than the attempt timeout that runs out of time is the caller's
    deadline, not a silent member: the pin stays. A full attempt timeout does move it."""
    first, second = proxies(etcd, 2)
    try:
        async with geeh.Client(
            [first.endpoint, second.endpoint], discover=False, attempt_timeout=1.0
        ) as client:
            transport = client.core.transport
            first.blackhole()
            request = rpc_pb2.RangeRequest(key=b"k")
            with pytest.raises(geeh.EtcdUnavailable):
                await transport.call(RANGE, request, timeout=0.2)
            assert transport.endpoint == first.endpoint, "a caller's deadline moved the pin"
            assert transport.generation == 0
            await within(transport.call(RANGE, request), 5, "a read with the default timeout")
            assert transport.endpoint == second.endpoint, "a silent member kept the pin"
    finally:
        first.close()
        second.close()


async def test_a_call_in_flight_when_the_client_closes_raises_closed_error(
    etcd: LocalEtcdCluster,
) -> None:
    [proxy] = proxies(etcd, 1)
    try:
        client = geeh.Client([proxy.endpoint], discover=False)
        await client.connect()
        sent = asyncio.Event()
        client.core.transport.on_request = lambda endpoint, path: sent.set()
        proxy.blackhole()
        call = asyncio.ensure_future(client.election("closing").leader())
        await within(sent.wait(), 5, "the read to be sent")
        await within(client.close(), 10, "close")
        with pytest.raises(geeh.ClosedError):
            await call
    finally:
        proxy.close()


async def test_a_second_close_finishes_what_a_cut_off_first_one_left(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """The first close is cancelled while it revokes (etcd unreachable); the second one must
    still revoke, and stop every stream and task, instead of returning at once."""
    [proxy] = proxies(etcd, 1)
    before = asyncio.all_tasks()
    try:
        client = geeh.Client([proxy.endpoint], discover=False)
        await client.connect()
        leadership = await client.election(name).campaign(b"v", ttl=30)
        revoking = asyncio.Event()
        client.core.transport.on_request = lambda endpoint, path: (
            revoking.set() if path == LEASE_REVOKE.path else None
        )
        proxy.blackhole()
        first = asyncio.ensure_future(client.close())
        await within(revoking.wait(), 5, "the close to revoke")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        proxy.pass_through()
        await within(client.close(), 10, "the second close")
        assert leadership.lost.is_set()
        async with geeh.Client(etcd.endpoints) as checker:
            assert await checker.election(name).leader() is None, "the lease was not revoked"
        left = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
        assert not left, f"tasks left after the second close: {left}"
        assert client.core.watches.active == 0
    finally:
        proxy.close()

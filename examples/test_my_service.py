"""A service whose job runs on one replica only, tested against a real etcd with faults.

    pip install "gee-h[testing]"
    pytest examples/test_my_service.py

The ``etcd`` and ``etcd_factory`` fixtures come from gee-h's pytest plugin.
"""

import asyncio
import contextlib

import pytest
import pytest_asyncio

import geeh

pytestmark = pytest.mark.asyncio


class Service:
    """One replica: it campaigns, and runs ``job`` only while it leads."""

    def __init__(self, endpoints: list[str], ident: str) -> None:
        self.endpoints, self.ident = endpoints, ident
        self.terms = 0  # how many times this replica became leader
        self.leading, self.following = asyncio.Event(), asyncio.Event()  # job runs / not
        self.leadership: geeh.Leadership | None = None

    async def job(self) -> None:
        """The leader-only work: a scheduler, a singleton consumer... (here: nothing)."""
        await asyncio.Future()

    def start(self) -> "Service":
        self.task = asyncio.create_task(self.run())
        return self

    async def stop(self) -> None:
        """Stop (on SIGTERM, say): leaving the campaign resigns, so another takes over."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def run(self) -> None:
        async with geeh.Client(self.endpoints) as client:
            while True:
                with contextlib.suppress(geeh.GeehError):  # lost: campaign again
                    async with client.election("my-service").campaign(self.ident, ttl=10) as lead:
                        self.leadership, self.terms = lead, self.terms + 1
                        work = asyncio.create_task(self.job())
                        self.following.clear()
                        self.leading.set()
                        try:
                            await lead.lost
                        finally:
                            work.cancel()
                            self.leading.clear()
                            self.following.set()


@pytest_asyncio.fixture
async def start():
    services = []

    def start(endpoints, ident):
        services.append(Service(endpoints, ident).start())
        return services[-1]

    yield start
    await asyncio.gather(*(s.stop() for s in services))


async def test_hand_off(etcd, start):
    a = start(etcd.endpoints, "a")
    await a.leading.wait()
    b = start(etcd.endpoints, "b")
    await a.stop()  # a deploy stops a: it resigns, b takes over at once
    await asyncio.wait_for(b.leading.wait(), 5)


async def test_killed_leader(etcd, start):
    a = start(etcd.endpoints, "a")
    await a.leading.wait()
    b = start(etcd.endpoints, "b")
    await asyncio.to_thread(etcd.wait_for_keys, "my-service/", 2)  # b waits in line
    etcd.expire(a.leadership)  # as if a had died: etcd expires its lease, now
    await asyncio.wait_for(b.leading.wait(), 5)
    await asyncio.wait_for(a.following.wait(), 5)  # a saw the loss: its job stopped


async def test_frozen_member(etcd_factory, start):
    cluster = etcd_factory(members=3)
    # A follower: a raft leader frozen past the TTL revokes leases as it thaws, on etcd
    # releases without the fix for etcd-io/etcd#15247 (gee-h then reports the loss).
    member = next(i for i in range(3) if i != cluster.leader_index())
    endpoints = cluster.endpoints
    a = start([endpoints.pop(member), *endpoints], "a")  # a talks to that member first
    await a.leading.wait()
    cluster.pause_for(member, 11)  # frozen past the TTL: a must move to another member
    await asyncio.to_thread(cluster.wait_healthy, 30)  # returns once member 0 is back
    assert a.leading.is_set() and a.terms == 1  # a kept leading throughout

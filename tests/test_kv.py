"""The KV surface and fenced writes, against a real etcd."""

from __future__ import annotations

import asyncio

import pytest
from support.kv import delete, revoke
from support.wait import within

import geeh
from geeh import kv
from geeh.testing import LocalEtcdCluster


async def test_get_put_delete_round_trip(client: geeh.Client, name: str) -> None:
    key = f"{name}/k".encode()
    assert await client.get(key) is None
    revision = await client.put(key, "v1")
    item = await client.get(key)
    assert item is not None
    assert (item.key, item.value, item.mod_revision, item.create_revision) == (
        key,
        b"v1",
        revision,
        revision,
    )
    await client.put(f"{name}/other", b"v2")
    assert [i.key for i in await client.get_prefix(f"{name}/")] == [key, f"{name}/other".encode()]
    later = await client.delete(name + "/", prefix=True)
    assert later > revision
    assert await client.get_prefix(f"{name}/") == []


async def test_txn_takes_the_branch_its_compares_choose(client: geeh.Client, name: str) -> None:
    key = f"{name}/k"
    await client.put(key, b"old")
    missed = await client.txn(
        [kv.value(key) == b"other"], [kv.put(key, b"new")], [kv.get(key), kv.delete(key)]
    )
    assert not missed.succeeded
    assert [i.value for i in missed.responses[0]] == [b"old"]
    assert missed.responses[1] == 1  # keys deleted
    assert await client.get(key) is None
    hit = await client.txn([kv.version(key) == 0], [kv.put(key, b"new")])
    assert hit.succeeded and hit.responses == [None]
    item = await client.get(key)
    assert item is not None and item.value == b"new" and item.mod_revision == hit.revision


async def test_compares_reject_wrong_operands(client: geeh.Client) -> None:
    with pytest.raises(geeh.InvalidArgument, match="compare version with an int"):
        kv.version(b"k") == "1"  # noqa: B015
    with pytest.raises(geeh.InvalidArgument, match=r"kv\.Compare"):
        await client.txn([True], [])  # type: ignore[list-item]


async def test_fenced_writes_land_only_while_leading(client: geeh.Client, name: str) -> None:
    data = f"{name}-data"
    async with client.election(name).campaign(b"a", ttl=5, cancel_on_loss=False) as leadership:
        revision = await leadership.put(data, b"from the leader")
        item = await client.get(data)
        assert item is not None and item.mod_revision == revision
        result = await leadership.txn([kv.value(data) == b"nope"], [], [kv.get(data)])
        assert not result.succeeded and result.responses[0][0].value == b"from the leader"
        # Someone else removes our key: the election has moved on without us.
        await delete(client, leadership.key)
        with pytest.raises(geeh.NotLeader):
            await leadership.put(data, b"late")
        with pytest.raises(geeh.NotLeader):
            await leadership.delete(data)
    item = await client.get(data)
    assert item is not None and item.value == b"from the leader"


async def test_the_guard_holds_even_before_the_loss_is_seen(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """A deposed leader that has not heard of its loss yet still writes nothing."""
    data = f"{name}-data"
    async with geeh.Client(etcd.endpoints) as a, geeh.Client(etcd.endpoints) as b:
        leadership = await within(a.election(name).campaign(b"a", ttl=5), 5, "a to lead")
        successor = asyncio.ensure_future(b.election(name).campaign(b"b", ttl=5))
        await revoke(b, leadership.lease)
        winner = await within(successor, 5, "b to lead")
        # Skip a's local check: only etcd's compare can stop this write now.
        with pytest.raises(geeh.NotLeader):
            await leadership._fenced([kv.put(data, b"stale")])
        assert await b.get(data) is None
        await winner.resign()


async def test_fenced_writes_refuse_keys_under_their_own_election(
    client: geeh.Client, name: str
) -> None:
    """A key with no lease under the election's prefix would lead it forever: refused, with
    one line saying why, and nothing written. Keys beside the prefix are fine."""
    inside = f"{name}/state"
    writes = {
        "put": lambda leadership: leadership.put(inside, b"v"),
        "delete": lambda leadership: leadership.delete(inside),
        "delete a range over it": lambda leadership: leadership.delete(name, prefix=True),
        "txn": lambda leadership: leadership.txn([], [kv.put(inside, b"v")]),
        "nested txn": lambda leadership: leadership.txn(
            [], [], [kv.txn([], [kv.get(inside)], [kv.put(inside, b"v")])]
        ),
    }
    async with client.election(name).campaign(b"a", ttl=5) as leadership:
        for what, write in writes.items():
            with pytest.raises(geeh.InvalidArgument) as refused:
                await write(leadership)
            message = str(refused.value)
            assert "\n" not in message and f"{name}/" in message, what
            assert "blocks the election" in message, what
        assert await client.get(inside) is None
        await leadership.put(f"{name}-state", b"beside")
        await leadership.txn([], [kv.get(inside)])  # reading is harmless
        assert leadership.is_leader
    assert await client.election(name).leader() is None

"""Requests resent after a lost answer: a first attempt that etcd applies late is harmless.

The scripted tests (support/script.py) hold a request back and have another client apply it
later, at the moment the test chooses: real etcd cannot do that on cue. The proxy test makes
the same happen over the network, with a member whose link delays every byte.
"""

from __future__ import annotations

import asyncio

import pytest
from support.kv import delete, joined, keys, left
from support.script import Script, deletes, puts
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import RANGE, TXN
from geeh.testing import LocalEtcdCluster, TcpProxy


async def no_tasks(client: geeh.Client) -> bool:
    return len(client.core.tasks) == 0


async def test_a_join_applied_after_the_withdraw_is_deleted_again(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """Shared session: the first join attempt's answer is lost and the resent one joins; the
    campaign is cancelled and withdraws; only then does etcd apply the first attempt, which
    creates the key again under the live lease. It must not stay (it would lead later)."""
    async with geeh.Client(etcd.endpoints) as client, geeh.Client(etcd.endpoints) as checker:
        leader = await checker.election(name).campaign(b"leader", ttl=5)
        session = await client.session(ttl=30)
        script = Script(client)
        script.add(TXN.path, puts(b"waiter"), "hold")
        campaign = asyncio.ensure_future(client.election(name).campaign(b"waiter", session=session))
        await joined(checker, name, 2)
        campaign.cancel()
        with pytest.raises(asyncio.CancelledError):
            await campaign
        assert await keys(checker, name) == [leader.key], "the withdraw left the key"
        [late] = script.held
        applied = await checker.core.transport.call(TXN, late)
        assert applied.succeeded, "the late join created the key again"
        await left(checker, name, 1)
        await leader.resign()
        assert await checker.election(name).leader() is None, "an orphan key leads"
        assert session.alive
        await session.close()
        await eventually(lambda: no_tasks(client), what="the late-join watch to end")


async def test_a_withdraw_etcd_does_not_confirm_goes_on_until_it_does(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """Shared session: the withdraw's delete fails for longer than the request timeout. The
    cancelled campaign returns, and the delete goes on in the background until confirmed."""
    async with (
        geeh.Client(etcd.endpoints, request_timeout=1, attempt_timeout=0.5) as client,
        geeh.Client(etcd.endpoints) as checker,
    ):
        leader = await checker.election(name).campaign(b"leader", ttl=5)
        session = await client.session(ttl=30)
        campaign = asyncio.ensure_future(client.election(name).campaign(b"waiter", session=session))
        await joined(checker, name, 2)
        script = Script(client)
        unreachable = script.add(TXN.path, deletes, "drop", times=-1)
        campaign.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(campaign, 5, "the cancelled campaign to return")
        await eventually(lambda: unreachable.hits > 2, what="the withdraw to be retried")
        assert len(await keys(checker, name)) == 2, "etcd was reachable after all"
        script.remove(unreachable)
        await left(checker, name, 1)
        await eventually(lambda: no_tasks(client), what="the background withdraw to end")
        await leader.resign()
        assert await checker.election(name).leader() is None
        await session.close()


async def test_a_proclaim_applied_late_cannot_overwrite_a_newer_one(
    client: geeh.Client, name: str
) -> None:
    async with geeh.Client(client.endpoints) as checker:
        election = client.election(name)
        leadership = await election.campaign(b"v0", ttl=5)
        script = Script(client)
        script.add(TXN.path, puts(b"first"), "hold")
        await leadership.proclaim(b"first")  # the resent attempt is applied
        await leadership.proclaim(b"second")
        [late] = script.held
        applied = await checker.core.transport.call(TXN, late)
        assert not applied.succeeded, "a late proclaim overwrote a newer one"
        leader = await election.leader()
        assert leader is not None and leader.value == b"second"
        await leadership.resign()


async def test_a_proclaim_whose_answer_is_lost_succeeds_once(
    client: geeh.Client, name: str
) -> None:
    election = client.election(name)
    leadership = await election.campaign(b"v0", ttl=5)
    script = Script(client)
    lost = script.add(TXN.path, puts(b"once"), "lose")
    await leadership.proclaim(b"once")
    assert lost.hits == 1
    leader = await election.leader()
    assert leader is not None and leader.value == b"once"
    assert leader.revision == leader.token + 1, "written more than once"
    await leadership.proclaim(b"twice")
    leader = await election.leader()
    assert leader is not None and leader.value == b"twice"
    await leadership.resign()


async def test_a_join_applied_late_through_a_slow_link(etcd: LocalEtcdCluster, name: str) -> None:
    """Over the network: the member behind the first endpoint gets the join only after the
    client gave up on it, joined through the second, and withdrew."""
    host, port = etcd.endpoints[0].rsplit(":", 1)
    with TcpProxy(host, int(port)) as slow, TcpProxy(host, int(port)) as fast:
        async with (
            geeh.Client(
                [slow.endpoint, fast.endpoint], discover=False, attempt_timeout=0.5
            ) as client,
            geeh.Client(etcd.endpoints) as checker,
        ):
            leader = await checker.election(name).campaign(b"leader", ttl=5)
            session = await client.session(ttl=30)
            key = f"{name}/{session.lease:x}".encode()
            now = await checker.core.transport.call(RANGE, rpc_pb2.RangeRequest(key=key))
            events = checker.core.watches.watch(key, start_revision=now.header.revision + 1)
            slow.delay(2.0)
            campaign = asyncio.ensure_future(
                client.election(name).campaign(b"waiter", session=session)
            )
            await joined(checker, name, 2)
            assert client.core.transport.endpoint == fast.endpoint
            campaign.cancel()
            with pytest.raises(asyncio.CancelledError):
                await campaign
            seen: list[str] = []
            while len(seen) < 4:
                batch = await within(events.next(), 10, f"event {len(seen) + 1} on our key")
                seen += ["DELETE" if e.type == e.DELETE else "PUT" for e in batch.events]
            # join (resent), withdraw, the first join applied late, deleted again
            assert seen == ["PUT", "DELETE", "PUT", "DELETE"]
            events.cancel()
            await leader.resign()
            assert await checker.election(name).leader() is None
            slow.pass_through()
            await session.close()


@pytest.mark.parametrize("end", ["resign", "loss"])
async def test_a_join_applied_after_the_term_ended_is_deleted_again(
    etcd: LocalEtcdCluster, name: str, end: str
) -> None:
    """Shared session: the first join attempt's answer is lost, the resent one wins. The
    leadership ends (resign, or a loss: its key deleted); only then does etcd apply the first
    attempt, which creates the key again on the live lease. It must not stay and lead."""
    async with geeh.Client(etcd.endpoints) as client, geeh.Client(etcd.endpoints) as checker:
        session = await client.session(ttl=30)
        script = Script(client)
        script.add(TXN.path, puts(b"first"), "hold")
        leadership = await client.election(name).campaign(b"first", session=session)
        if end == "resign":
            await leadership.resign()
        else:
            await delete(checker, leadership.key)
            await within(leadership.lost.wait(), 5, "the loss to be seen")
        await left(checker, name, 0)
        [late] = script.held
        applied = await checker.core.transport.call(TXN, late)
        assert applied.succeeded, "the late join created the key again"
        await left(checker, name, 0)
        other = await within(
            checker.election(name).campaign(b"other", ttl=5), 5, "another candidate to win"
        )
        await other.resign()
        assert session.alive
        await session.close()
        await eventually(lambda: no_tasks(client), what="the late-join watch to end")


async def test_a_join_applied_late_after_a_resign_through_a_slow_link(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """Over the network: the first join attempt reaches the member behind a slow link only
    after the resent one won through the other link and the leader resigned."""
    host, port = etcd.endpoints[0].rsplit(":", 1)
    with TcpProxy(host, int(port)) as slow, TcpProxy(host, int(port)) as fast:
        async with (
            geeh.Client(
                [slow.endpoint, fast.endpoint], discover=False, attempt_timeout=0.5
            ) as client,
            geeh.Client(etcd.endpoints) as checker,
        ):
            session = await client.session(ttl=30)
            key = f"{name}/{session.lease:x}".encode()
            now = await checker.core.transport.call(RANGE, rpc_pb2.RangeRequest(key=key))
            events = checker.core.watches.watch(key, start_revision=now.header.revision + 1)
            slow.delay(2.0)
            leadership = await client.election(name).campaign(b"first", session=session)
            assert client.core.transport.endpoint == fast.endpoint
            await leadership.resign()
            seen: list[str] = []
            while len(seen) < 4:
                batch = await within(events.next(), 10, f"event {len(seen) + 1} on our key")
                seen += ["DELETE" if e.type == e.DELETE else "PUT" for e in batch.events]
            # join (resent), resign, the first join applied late, deleted again
            assert seen == ["PUT", "DELETE", "PUT", "DELETE"]
            events.cancel()
            assert await checker.election(name).leader() is None
            slow.pass_through()
            await session.close()

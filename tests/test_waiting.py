"""Waiting in line when key order is not join order, and what a waiting candidate costs.

A candidate key is the prefix plus the lease ID, so keys sort by lease ID, while the line is
in create-revision (join) order. Here leases are granted in one order and used to join in
another, as happens with leases from different members or granted concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support.kv import joined, keys, left, watches_caught_up
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import RANGE, TXN
from geeh.testing import LocalEtcdCluster


@pytest.fixture
async def other(etcd: LocalEtcdCluster) -> AsyncIterator[geeh.Client]:
    """A second client: the candidate under test, its requests and events counted apart."""
    async with geeh.Client(etcd.endpoints) as c:
        yield c


def count_ranges(client: geeh.Client) -> list[int]:
    """A one-item list holding the number of Range requests the client has sent so far."""
    ranges = [0]

    def record(_endpoint: str, path: str) -> None:
        if path == RANGE.path:
            ranges[0] += 1

    client.core.transport.on_request = record
    return ranges


def record_deletions(client: geeh.Client) -> list[bytes]:
    """Every deleted key the client's watch stream delivers, in order of arrival."""
    seen: list[bytes] = []
    hub = client.core.watches
    original: Callable[[rpc_pb2.WatchResponse], None] = hub.received

    def received(response: rpc_pb2.WatchResponse) -> None:
        seen.extend(e.kv.key for e in response.events if e.type == e.DELETE)
        original(response)

    hub.received = received  # type: ignore[method-assign]
    return seen


async def line_up(
    client: geeh.Client, name: str, sessions: list[geeh.Session], order: list[int]
) -> list[asyncio.Future[geeh.Leadership]]:
    """Campaign with ``sessions`` in ``order``, each joined before the next starts."""
    election = client.election(name)
    campaigns = []
    for n, i in enumerate(order, start=1):
        campaigns.append(asyncio.ensure_future(election.campaign(f"c{i}", session=sessions[i])))
        await joined(client, name, n)
    return campaigns


async def test_candidates_win_in_join_order_whatever_the_key_order(
    client: geeh.Client, name: str
) -> None:
    sessions = [await client.session(ttl=10) for _ in range(6)]  # lease IDs ascending
    order = [5, 1, 3, 0, 4, 2]
    campaigns = await line_up(client, name, sessions, order)
    for i, campaign in zip(order, campaigns, strict=True):
        leadership = await within(campaign, 5, f"candidate c{i} to win after the one ahead")
        assert leadership.value == f"c{i}".encode()
        assert all(not c.done() for c in campaigns[campaigns.index(campaign) + 1 :])
        await leadership.resign()
    for s in sessions:
        await s.close()


async def crowded(
    client: geeh.Client, other: geeh.Client, name: str, behind: int
) -> tuple[geeh.Leadership, asyncio.Future[geeh.Leadership], bytes, list[asyncio.Future[Any]]]:
    """P leads, then C (on ``other``) waits, then ``behind`` more candidates join.

    P's key is the lowest and C's the highest, so every key behind C lies in the key range
    between C's key and P's. Returns (P's leadership, C's campaign, C's key, those behind).
    """
    sessions = [await client.session(ttl=10) for _ in range(behind + 1)]
    c_session = await other.session(ttl=10)
    assert max(s.lease for s in sessions) < c_session.lease
    election = client.election(name)
    p = await election.campaign(b"P", session=sessions[0])
    c = asyncio.ensure_future(other.election(name).campaign(b"C", session=c_session))
    await joined(client, name, 2)
    campaigns = []
    for i, session in enumerate(sessions[1:], start=1):
        campaigns.append(asyncio.ensure_future(election.campaign(f"Y{i}", session=session)))
        await joined(client, name, 2 + i)
    return p, c, f"{election.prefix.decode()}{c_session.lease:x}".encode(), campaigns


async def withdraw(client: geeh.Client, name: str, campaign: asyncio.Future[Any]) -> None:
    before = len(await keys(client, name))
    campaign.cancel()
    await left(client, name, before - 1)


async def test_a_crowded_key_range_costs_a_waiting_candidate_one_foreign_event(
    client: geeh.Client, other: geeh.Client, name: str
) -> None:
    heard = record_deletions(other)
    p, c, c_key, behind = await crowded(client, other, name, behind=5)
    for campaign in behind:
        await withdraw(client, name, campaign)
    assert not c.done(), "C won while P was leading"
    await p.resign()
    c_leads = await within(c, 5, "C to lead after P resigned")
    assert c_leads.key == c_key
    foreign = [k for k in heard if k not in {c_key, p.key}]
    assert len(foreign) <= 1, f"C heard {len(foreign)} deletions of keys behind it"
    await c_leads.resign()


async def test_a_candidate_with_a_crowded_range_never_wins_after_its_key_goes(
    client: geeh.Client, other: geeh.Client, name: str
) -> None:
    heard = record_deletions(other)
    p, c, c_key, behind = await crowded(client, other, name, behind=2)
    await withdraw(client, name, behind[0])
    await eventually(lambda: heard, what="C to hear a deletion behind it")
    # C's key and P's go in one revision: C must not read P's deletion as its win.
    delete = [
        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
        for k in (c_key, p.key)
    ]
    await client.core.transport.call(TXN, rpc_pb2.TxnRequest(success=delete))
    with pytest.raises(geeh.CandidateRemoved):
        await within(c, 5, "C's campaign to fail")
    behind[1].cancel()


async def test_the_third_in_line_does_not_read_again_when_it_knows_the_whole_line(
    etcd: LocalEtcdCluster, client: geeh.Client, other: geeh.Client, name: str
) -> None:
    election = client.election(name)
    a = await election.campaign(b"a", ttl=10)
    b = asyncio.ensure_future(election.campaign(b"b", ttl=10))
    await joined(client, name, 2)
    ranges = count_ranges(other)
    c = asyncio.ensure_future(other.election(name).campaign(b"c", ttl=10))
    await joined(client, name, 3)
    # c's own watch and its line's two (at least): once etcd serves them in step, the
    # hand-offs reach them in revision order (a hand-off sooner may cost c a read, rightly).
    await eventually(lambda: other.core.sizes()["watches"] >= 3, what="c's watches")
    await watches_caught_up(etcd, client, other)
    await a.resign()
    b_leads = await within(b, 5, "b to lead")
    await b_leads.resign()
    c_leads = await within(c, 5, "c to lead")
    assert ranges[0] == 1, f"c sent {ranges[0]} Range requests; its first read saw the whole line"
    await c_leads.resign()

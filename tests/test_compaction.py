"""Compaction during a campaign, then a member restart, against a real etcd (``-m slow``).

Compaction is routine for a leader: its own-key watch filters PUTs out, so the watch's next
revision never advances, and the first reconnect after a compaction finds it compacted. The
leader must re-read and watch again, and still report a later deletion of its key; a waiting
candidate must re-read its line and still win. (When the re-read itself fails, which a real
etcd does not do on demand, see test_win_rule.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conftest import ETCD_BINARIES
from support.kv import delete, joined
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import PUT, RANGE, WATCH_PATH
from geeh.testing import LocalEtcdCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(ETCD_BINARIES), ids=lambda v: f"etcd{v}")
def member(request: pytest.FixtureRequest) -> Iterator[LocalEtcdCluster]:
    """A one-member etcd of its own: the tests restart it."""
    with LocalEtcdCluster(1, etcd_bin=ETCD_BINARIES[request.param]) as cluster:
        yield cluster


def requests(client: geeh.Client) -> list[str]:
    """The paths of the requests the client sends (unary calls and streams opened) from now."""
    sent: list[str] = []
    client.core.transport.on_request = lambda _endpoint, path: sent.append(path)
    return sent


async def test_compaction_then_a_restart_leaves_leader_and_line_working(
    member: LocalEtcdCluster, name: str
) -> None:
    endpoints = member.endpoints
    async with (
        geeh.Client(endpoints) as admin,
        geeh.Client(endpoints) as lc,
        geeh.Client(endpoints) as wc,
    ):
        leader = await within(lc.election(name).campaign(b"L", ttl=30), 10, "a leader")
        waiting = asyncio.ensure_future(wc.election(name).campaign(b"W", ttl=30))
        await joined(admin, name, 2)
        sent = requests(lc)
        for i in range(3):  # history moves on past every watch's start
            put = rpc_pb2.PutRequest(key=f"{name}-other".encode(), value=b"%d" % i)
            await admin.core.transport.call(PUT, put)
        await admin.compact()
        await asyncio.to_thread(member.restart, 0)
        await eventually(lambda: WATCH_PATH in sent, timeout=20, what="the stream re-opened")
        # etcd refused the re-created own-key watch as compacted; its watcher then read the
        # key (a Range) and watches it again.
        await eventually(lambda: RANGE.path in sent, what="the leader's key read again")
        await eventually(lambda: lc.core.watches.active == 1, what="the leader's key watched again")
        assert leader.is_leader
        assert not waiting.done()
        await delete(admin, leader.key)
        reason = await within(leader.lost.wait(), 10, "the leader to report its loss")
        assert isinstance(reason, geeh.CandidateRemoved)
        successor = await within(waiting, 10, "the waiting candidate to win")
        assert successor.value == b"W"
        await successor.resign()

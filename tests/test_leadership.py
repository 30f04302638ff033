"""A leadership's end against a real etcd: no ghost after a failed resign or a loss, client
tables that do not grow, and the leadership block that a loss interrupts (issue 9, issue 11).
Deterministic versions of the same orderings: test_leadership_units.py."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support.kv import joined, keys, revoke
from support.wait import eventually, within
from support.witness import LeaseWitness

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import LEASE_TTL
from geeh.session import now
from geeh.testing import LocalEtcdCluster, TcpProxy

TTL = 5


async def lease_ttl(client: geeh.Client, lease: int) -> int:
    request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease)
    return int((await client.core.transport.call(LEASE_TTL, request)).TTL)


@pytest.fixture
async def proxied(etcd: LocalEtcdCluster) -> AsyncIterator[tuple[TcpProxy, geeh.Client]]:
    """A client that reaches etcd only through a fault proxy (no discovery: no way around)."""
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        async with geeh.Client([proxy.endpoint], discover=False) as client:
            yield proxy, client


# -- issue 9, finding 1: a resign lost on the way -----------------------------------------------


async def test_a_resign_lost_on_the_way_leaves_no_ghost(
    proxied: tuple[TcpProxy, geeh.Client], client: geeh.Client, name: str
) -> None:
    proxy, pc = proxied
    leader = await within(pc.election(name).campaign(b"a", ttl=TTL), 10, "the leader")
    successor = asyncio.ensure_future(client.election(name).campaign(b"b", ttl=TTL))
    await joined(client, name, 2)
    proxy.blackhole()  # the revoke is lost itself, not queued for later
    with pytest.raises(geeh.EtcdUnavailable):
        await leader.resign(timeout=0.5)
    proxy.pass_through()
    # Before: the keepalives went on after the heal, and the successor waited forever.
    won = await within(successor, 3 * TTL, "the successor to win after the heal")
    assert await keys(client, name) == [won.key]
    assert await lease_ttl(client, leader.lease) == -1
    await leader.resign()  # the state was kept: the retry ends quietly
    await won.resign()


# -- issue 9, finding 8: a loss at the deadline revokes ---------------------------------------


@pytest.mark.slow
async def test_a_leader_lost_at_its_deadline_revokes_its_lease(
    proxied: tuple[TcpProxy, geeh.Client], client: geeh.Client, name: str
) -> None:
    """Keepalives still reach etcd and renew the lease, but their answers come too late: the
    leader gives up at its deadline while etcd would keep its key for a TTL more. The
    successor must not wait for that: it wins before etcd's own expiry of the lease."""
    proxy, pc = proxied
    leader = await within(pc.election(name).campaign(b"a", ttl=TTL), 10, "the leader")
    successor = asyncio.ensure_future(client.election(name).campaign(b"b", ttl=TTL))
    await joined(client, name, 2)
    witness = LeaseWitness(client, leader.lease)
    reply_timeout = leader.session.reply_timeout
    proxy.delay(0.6 * reply_timeout)  # one way in time, both ways too late
    try:
        reason = await within(leader.lost.wait(), 3 * TTL, "the loss at the deadline")
        assert isinstance(reason, geeh.SessionExpired)
        won = await within(successor, 3 * TTL, "the successor")
        won_at = now()
    finally:
        proxy.pass_through()
        await witness.stop()
    assert witness.answers > 0
    print(f"successor won {witness.lives_until - won_at:.2f}s before etcd's own expiry")
    assert won_at < witness.lives_until, "the successor waited for etcd to expire the lease"
    await won.resign()


async def test_a_join_whose_lease_expired_meanwhile_fails_with_session_expired(
    client: geeh.Client, name: str
) -> None:
    session = await client.session(ttl=30)
    await revoke(client, session.lease)  # behind its back: its next keepalive is 10 s away
    with pytest.raises(geeh.SessionExpired):
        await client.election(name).campaign(b"v", session=session)
    assert await keys(client, name) == []
    await session.close()


# -- issue 9, finding 7: nothing grows with the number of campaigns ---------------------------


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def _quiet(client: geeh.Client, sizes: dict[str, int]) -> None:
    await eventually(lambda: client.core.sizes() == sizes, timeout=10, what=f"sizes {sizes}")


async def test_campaign_and_resign_cycles_leave_the_tables_as_they_were(
    client: geeh.Client, name: str
) -> None:
    election = client.election(name)
    await (await election.campaign(b"warm-up", ttl=5)).resign()
    start = {**client.core.sizes(), "tasks": 0, "keepalive waiters": 0}
    await _quiet(client, start)
    live = (_live(geeh.Leadership), _live(geeh.Session))
    for i in range(150):
        leadership = await election.campaign(f"round {i}", ttl=5)
        await leadership.resign()
    del leadership
    await _quiet(client, start)
    assert (_live(geeh.Leadership), _live(geeh.Session)) == live


async def test_lost_leaderships_are_forgotten(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    start = {**client.core.sizes(), "tasks": 0, "keepalive waiters": 0}
    for i in range(15):  # a service that campaigns again after each loss
        leadership = await election.campaign(f"round {i}", ttl=30)
        await revoke(client, leadership.lease)
        await within(leadership.lost.wait(), 5, "the loss")
    await _quiet(client, start)
    assert await keys(client, name) == []


# -- issue 9, finding 11: sessions as context managers, ttl with a session ---------------------


async def test_a_session_is_an_async_context_manager(client: geeh.Client, name: str) -> None:
    async with client.session(5) as session:
        leadership = await client.election(name).campaign(b"v", session=session)
        assert leadership.is_leader
        await leadership.resign()
    assert not session.alive
    assert await lease_ttl(client, session.lease) == -1


async def test_ttl_is_refused_with_a_session_or_a_lease(client: geeh.Client, name: str) -> None:
    session = await client.session(5)
    election = client.election(name)
    with pytest.raises(geeh.InvalidArgument, match="ttl cannot be given with session"):
        election.campaign(b"v", ttl=5, session=session)
    with pytest.raises(geeh.InvalidArgument, match="ttl cannot be given with lease"):
        election.campaign(b"v", ttl=5, lease=session.lease)
    await session.close()


# -- issue 11, part 1: the leadership block ---------------------------------------------------


async def _block_until_cancelled(run: Callable[[], Any]) -> Any:
    return await within(run(), 15, "the block to end")


async def test_a_block_is_interrupted_by_the_watch_event_of_a_revoke(
    client: geeh.Client, name: str
) -> None:
    election = client.election(name)

    async def run() -> None:
        async with election.campaign(b"v", ttl=30) as leadership:
            await revoke(client, leadership.lease)
            await asyncio.sleep(3600)

    with pytest.raises(geeh.LeadershipLost) as caught:
        await _block_until_cancelled(run)
    # TTL 30: only the watch event of the deletion can explain the interruption.
    assert isinstance(caught.value.reason, geeh.CandidateRemoved)
    assert isinstance(caught.value, geeh.ElectionError)
    assert await keys(client, name) == []


async def test_a_block_is_interrupted_at_the_local_deadline_while_etcd_is_frozen(
    etcd: LocalEtcdCluster, name: str
) -> None:
    frozen_when_interrupted: list[bool] = []
    async with geeh.Client(etcd.endpoints, request_timeout=1, attempt_timeout=0.5) as c:

        async def run() -> None:
            async with c.election(name).campaign(b"v", ttl=2) as leadership:
                etcd.stop(0)
                try:
                    await asyncio.sleep(3600)
                finally:
                    frozen_when_interrupted.append(etcd.is_stopped(0))
                    assert now() >= leadership.session.deadline

        try:
            with pytest.raises(geeh.LeadershipLost) as caught:
                await _block_until_cancelled(run)
        finally:
            etcd.resume(0)
        assert frozen_when_interrupted == [True], "not interrupted before etcd came back"
        assert isinstance(caught.value.reason, geeh.SessionExpired)
        # Once etcd is back, the lease goes by the background revoke.
        await eventually(lambda: _no_keys(c, name), timeout=10, what="the key to go")


async def _no_keys(client: geeh.Client, name: str) -> bool:
    return await keys(client, name) == []


async def test_a_cancellation_from_outside_propagates_and_resigns(
    client: geeh.Client, name: str
) -> None:
    entered = asyncio.Event()
    held: list[geeh.Leadership] = []

    async def run() -> None:
        async with client.election(name).campaign(b"v", ttl=30) as leadership:
            held.append(leadership)
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(run())
    await within(entered.wait(), 10, "the block")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held[0].lost.is_set() and held[0].lost.reason is None  # resigned, not lost
    assert await keys(client, name) == []


async def test_a_loss_during_the_resign_at_exit_changes_nothing(
    etcd: LocalEtcdCluster, name: str
) -> None:
    async with geeh.Client(etcd.endpoints, request_timeout=15) as c:
        thawer: asyncio.Future[None] | None = None
        try:
            async with c.election(name).campaign(b"v", ttl=2) as leadership:
                session = leadership.session
                etcd.stop(0)

                async def thaw_after_the_loss() -> None:
                    await session.expired.wait()  # set while the resign waits on etcd
                    etcd.resume(0)

                thawer = asyncio.ensure_future(thaw_after_the_loss())
            # The exit's resign waited on the frozen etcd, the deadline passed meanwhile, then
            # etcd thawed: the block ended normally (no cancellation, no LeadershipLost).
        finally:
            etcd.resume(0)
        assert thawer is not None and thawer.done()
        assert isinstance(session.expired.reason, geeh.SessionExpired)
        assert leadership.lost.reason is None
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await eventually(lambda: _no_keys(c, name), timeout=10, what="the key to go")


async def test_a_loss_while_the_block_exits_with_its_own_error(
    etcd: LocalEtcdCluster, name: str
) -> None:
    async with geeh.Client(etcd.endpoints, request_timeout=1, attempt_timeout=0.5) as c:
        try:
            with pytest.raises(ValueError, match="gave up"):
                async with c.election(name).campaign(b"v", ttl=2) as leadership:
                    etcd.stop(0)
                    while leadership.is_leader:  # busy work: no await, no event-loop step
                        time.sleep(0.05)  # noqa: ASYNC251 - blocking on purpose
                    raise ValueError("gave up: not leader any more")
        finally:
            etcd.resume(0)
        assert isinstance(leadership.lost.reason, geeh.SessionExpired)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await asyncio.sleep(0)  # no cancellation left behind for the next await
        await eventually(lambda: _no_keys(c, name), timeout=10, what="the key to go")


async def test_a_block_that_turns_the_cancellation_into_its_own_error(
    client: geeh.Client, name: str
) -> None:
    with pytest.raises(RuntimeError, match="clean-up failed"):
        async with client.election(name).campaign(b"v", ttl=30) as leadership:
            try:
                await revoke(client, leadership.lease)
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise RuntimeError("clean-up failed") from None
    assert isinstance(leadership.lost.reason, geeh.CandidateRemoved)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)


async def test_cancel_on_loss_false_keeps_the_block_running(client: geeh.Client, name: str) -> None:
    async with client.election(name).campaign(b"v", ttl=30, cancel_on_loss=False) as leadership:
        await revoke(client, leadership.lease)
        reason = await within(leadership.lost.wait(), 5, "the loss")
        await asyncio.sleep(0.05)  # still running after the loss: nothing cancels it
        assert isinstance(reason, geeh.CandidateRemoved)


QUIET_LOSS = """
import asyncio, sys
import geeh

async def main() -> None:
    async with geeh.Client(sys.argv[1].split(",")) as client:
        try:
            async with client.election(sys.argv[2]).campaign(b"me", ttl=5) as leadership:
                await leadership.session.revoke()  # lost behind the block's back
                await asyncio.Event().wait()
        except geeh.LeadershipLost:
            print("handled")

asyncio.run(main())
"""


async def test_a_handled_loss_prints_nothing_without_logging_configured(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """A library is quiet: with no logging configured, a loss the user handled writes
    nothing on stderr (no last-resort WARNING line)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        QUIET_LOSS,
        ",".join(etcd.endpoints),
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(process.communicate(), 30, "the snippet to finish")
    assert (process.returncode, out, err) == (0, b"handled\n", b"")


async def test_a_handled_loss_is_not_a_warning(
    client: geeh.Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller hears of a loss (LeadershipLost here): the log says it at INFO."""
    caplog.set_level(logging.INFO, logger="geeh")
    with pytest.raises(geeh.LeadershipLost):
        async with client.election(name).campaign(b"me", ttl=5) as leadership:
            await leadership.session.revoke()
            await asyncio.Event().wait()
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert lost and all(r.levelno == logging.INFO for r in lost)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

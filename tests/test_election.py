"""The election recipe against a real etcd: campaign, hand-off, loss, cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.kv import delete, joined, keys, revoke
from support.wait import within

import geeh
from geeh import kv
from geeh.session import now
from geeh.testing import LocalEtcdCluster

CANDIDATE = Path(__file__).parent / "support" / "candidate.py"


async def test_one_candidate_is_elected_and_resigns(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    assert await election.leader() is None
    leadership = await within(election.campaign(b"v1", ttl=5), 5, "election")
    assert leadership.is_leader
    assert leadership.key == f"{name}/{leadership.lease:x}".encode()
    leader = await election.leader()
    assert leader is not None
    assert (leader.key, leader.value, leader.token) == (leadership.key, b"v1", leadership.token)
    await leadership.resign()
    assert leadership.lost.is_set() and leadership.lost.reason is None
    assert not leadership.is_leader
    assert await election.leader() is None
    await leadership.resign()  # idempotent


async def test_context_manager_resigns_on_exit(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    async with election.campaign("str value is fine", ttl=5) as leadership:
        assert (await election.leader()).value == b"str value is fine"  # type: ignore[union-attr]
    assert leadership.lost.is_set()
    assert await keys(client, name) == []


async def test_five_candidates_are_elected_in_join_order(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    first = await election.campaign(b"c0", ttl=5)
    waiting = []
    for i in range(1, 5):
        task = asyncio.ensure_future(election.campaign(f"c{i}", ttl=5))
        # Join order is create-revision order: wait until this candidate's key exists.
        await joined(client, name, i + 1)
        waiting.append(task)
    tokens = [first.token]
    current = first
    for i, task in enumerate(waiting, start=1):
        assert not task.done(), f"candidate {i} elected before its predecessor resigned"
        await current.resign()
        current = await within(task, 5, f"candidate {i} to take over")
        assert current.value == f"c{i}".encode()
        assert (await election.leader()).key == current.key  # type: ignore[union-attr]
        tokens.append(current.token)
        assert all(not t.done() for t in waiting[i:]), "a later candidate jumped the queue"
    assert tokens == sorted(tokens), "fencing tokens must increase from leader to leader"
    await current.resign()


async def test_killed_leader_process_is_replaced_within_ttl(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    ttl = 2
    proc = subprocess.Popen(  # noqa: ASYNC220 - a plain child process, read in a thread
        [sys.executable, str(CANDIDATE), ",".join(etcd.endpoints), name, "doomed", str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = await within(asyncio.to_thread(proc.stdout.readline), 10, "subprocess elected")  # type: ignore[union-attr]
        assert line.startswith("elected ")
        successor = asyncio.ensure_future(client.election(name).campaign(b"next", ttl=5))
        await joined(client, name, 2)
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        leadership = await within(successor, ttl + 1, "successor elected within TTL + 1 s")
        print(f"crash failover {time.monotonic() - killed:.2f}s with ttl {ttl}s")
        await leadership.resign()
    finally:
        proc.kill()
        proc.wait()


async def test_proclaim_is_seen_by_observers(client: geeh.Client, name: str) -> None:
    election = client.election(name)
    leadership = await election.campaign(b"before", ttl=5)
    async with election.observe() as changes:
        seen = await within(anext(changes), 5, "current leader")
        assert seen is not None and seen.value == b"before"
        await leadership.proclaim("after")
        seen = await within(anext(changes), 5, "proclaimed value")
        assert seen is not None and (seen.value, seen.token) == (b"after", leadership.token)
    assert leadership.value == b"after"
    await leadership.resign()
    with pytest.raises(geeh.NotLeader):
        await leadership.proclaim(b"too late")


async def test_campaign_cancelled_while_waiting_removes_its_key(
    client: geeh.Client, name: str
) -> None:
    election = client.election(name)
    leader = await election.campaign(b"leader", ttl=5)
    waiter = asyncio.ensure_future(election.campaign(b"waiter", ttl=5))
    await joined(client, name, 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await keys(client, name) == [leader.key]
    await leader.resign()


async def test_campaign_in_a_shared_session_withdraws_only_its_key(
    client: geeh.Client, name: str
) -> None:
    session = await client.session(ttl=5)
    election = client.election(name)
    leader = await election.campaign(b"leader", ttl=5)
    waiter = asyncio.ensure_future(election.campaign(b"waiter", session=session))
    await joined(client, name, 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await keys(client, name) == [leader.key]
    assert session.alive, "a shared session outlives the campaign"
    await leader.resign()
    await session.close()


async def test_lease_revoked_while_waiting_fails_the_campaign(
    client: geeh.Client, name: str
) -> None:
    election = client.election(name)
    leader = await election.campaign(b"leader", ttl=5)
    session = await client.session(ttl=30)
    waiter = asyncio.ensure_future(election.campaign(b"waiter", session=session))
    await joined(client, name, 2)
    await revoke(client, session.lease)
    with pytest.raises(geeh.ElectionError):
        await within(waiter, 5, "campaign to fail")
    await leader.resign()
    assert await keys(client, name) == []


async def test_key_deleted_while_waiting_never_reports_a_win(
    client: geeh.Client, name: str
) -> None:
    """Go's #19597: a campaign whose key vanished must not be elected later."""
    election = client.election(name)
    leader = await election.campaign(b"leader", ttl=5)
    session = await client.session(ttl=30)
    waiter = asyncio.ensure_future(election.campaign(b"waiter", session=session))
    await joined(client, name, 2)
    await delete(client, f"{name}/{session.lease:x}".encode())
    with pytest.raises(geeh.CandidateRemoved):
        await within(waiter, 5, "campaign to fail")
    await leader.resign()
    await session.close()


async def test_lease_revoked_while_leading_signals_loss(client: geeh.Client, name: str) -> None:
    # TTL 30 s: only the revocation itself can explain a prompt loss.
    leadership = await client.election(name).campaign(b"v", ttl=30)
    revoked = time.monotonic()
    await revoke(client, leadership.lease)
    reason = await within(leadership.lost.wait(), 5, "loss to be signalled")
    print(f"loss signalled {1000 * (time.monotonic() - revoked):.1f} ms after revoke")
    assert isinstance(reason, geeh.ElectionError)
    assert not leadership.is_leader
    with pytest.raises(geeh.NotLeader):
        await leadership.proclaim(b"x")
    await leadership.resign()  # still harmless


async def test_key_deleted_while_leading_signals_loss(client: geeh.Client, name: str) -> None:
    leadership = await client.election(name).campaign(b"v", ttl=30)
    await delete(client, leadership.key)
    reason = await within(leadership.lost.wait(), 5, "loss to be signalled")
    assert isinstance(reason, geeh.CandidateRemoved)


async def test_frozen_etcd_loses_leadership_by_the_local_deadline(
    etcd: LocalEtcdCluster, name: str
) -> None:
    async with geeh.Client(etcd.endpoints, request_timeout=1, attempt_timeout=0.5) as client:
        leadership = await client.election(name).campaign(b"v", ttl=2)
        etcd.stop(0)
        try:
            # Hang guard only: what matters is the order. The loss comes from the local
            # deadline alone, while etcd is still frozen (it cannot expire anything then).
            reason = await within(leadership.lost.wait(), 10, "local deadline")
            assert etcd.is_stopped(0), "the loss came only once etcd was back"
            assert now() >= leadership.session.deadline
            assert isinstance(reason, geeh.ElectionError)  # key or lease gone, as it happens
        finally:
            etcd.resume(0)


async def test_resign_that_failed_can_be_retried(etcd: LocalEtcdCluster, name: str) -> None:
    """Go's #22123: a failed resign must keep its state so that a retry does the job."""
    async with geeh.Client(etcd.endpoints, request_timeout=1, attempt_timeout=0.5) as client:
        election = client.election(name)
        leadership = await election.campaign(b"v", ttl=10)
        etcd.stop(0)
        try:
            with pytest.raises(geeh.EtcdUnavailable):
                await leadership.resign()
        finally:
            etcd.resume(0)
        await leadership.resign()
        assert await election.leader() is None


async def test_campaign_resumes_an_existing_lease(client: geeh.Client, name: str) -> None:
    """After a restart, the same lease is kept alive and its key made again with a new
    token: no second candidate, and the earlier holder's token no longer fences."""
    election = client.election(name)
    first = await election.campaign(b"v1", session=await client.session(ttl=10))
    resumed = await election.campaign(b"v2", lease=first.lease)
    assert resumed.key == first.key and resumed.token > first.token
    assert await keys(client, name) == [resumed.key]
    assert (await election.leader()).value == b"v2"  # type: ignore[union-attr]
    await within(first.lost.wait(), 5, "the earlier holder to see its key go")
    with pytest.raises(geeh.NotLeader):
        await first._fenced([kv.put(f"{name}-data", b"from the earlier holder")])
    await resumed.put(f"{name}-data", b"from the adopter")
    await resumed.resign()


async def test_a_frozen_holder_of_an_adopted_lease_is_fenced_out(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """The earlier process is frozen (SIGSTOP), not dead, when its lease is adopted. Its
    token is refused from then on; when it wakes it sees its loss and ends its session,
    which ends the adopter's term too: never two holders of one token."""
    child = subprocess.Popen(  # noqa: ASYNC220 - a plain child process, read in a thread
        [sys.executable, str(CANDIDATE), ",".join(etcd.endpoints), name, "frozen", "10"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await within(asyncio.to_thread(child.stdout.readline), 10, "it to lead")
        _, key, token = line.decode().split()
        lease = int(key.rsplit("/", 1)[1], 16)
        os.kill(child.pid, signal.SIGSTOP)
        async with geeh.Client(etcd.endpoints) as client:
            adopted = await client.election(name).campaign(b"adopter", lease=lease)
            assert adopted.key.decode() == key and adopted.token > int(token)
            stale = [kv.create_revision(key) == int(token)]
            written = await client.txn(stale, [kv.put(f"{name}-data", b"frozen")])
            assert not written.succeeded, "the frozen holder's token still fences"
            os.kill(child.pid, signal.SIGCONT)
            assert (
                await within(
                    asyncio.get_running_loop().run_in_executor(None, child.wait), 10, "it to exit"
                )
                == 0
            )
            reason = await within(adopted.lost.wait(), 10, "the shared lease to end")
            assert isinstance(reason, geeh.ElectionError)  # key or lease gone, as it happens
            assert await client.get(f"{name}-data") is None
    finally:
        if child.poll() is None:
            child.kill()  # SIGKILL ends a stopped process too
        child.wait()


async def test_lease_that_is_gone_cannot_be_resumed(client: geeh.Client, name: str) -> None:
    session = await client.session(ttl=5)
    await session.close()
    with pytest.raises(geeh.SessionExpired):
        await client.election(name).campaign(b"v", lease=session.lease)


async def test_a_waiter_leaving_the_middle_of_the_queue(client: geeh.Client, name: str) -> None:
    """The third in line watches the two keys before it: the second leaving must not elect it
    while the leader still leads, and the leader leaving then must elect it at once."""
    election = client.election(name)
    leader = await election.campaign(b"a", ttl=5)
    middle = asyncio.ensure_future(election.campaign(b"b", ttl=5))
    await joined(client, name, 2)
    last = asyncio.ensure_future(election.campaign(b"c", ttl=5))
    await joined(client, name, 3)
    middle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await middle
    await joined(client, name, 2)  # the same count, now without b
    assert len(await keys(client, name)) == 2
    # Give "last" every chance to misread the queue: a proclaim is one more event it sees.
    await leader.proclaim(b"a2")
    assert not last.done(), "elected while the leader still leads"
    await leader.resign()
    promoted = await within(last, 5, "the last candidate to take over")
    assert promoted.value == b"c"
    await promoted.resign()


async def test_leaving_the_block_after_a_loss_neither_raises_nor_waits(
    client: geeh.Client, name: str
) -> None:
    """With cancel_on_loss=False, the block runs on after a loss, and leaves quietly."""
    election = client.election(name)
    async with election.campaign(b"v", ttl=30, cancel_on_loss=False) as leadership:
        await revoke(client, leadership.lease)
        assert isinstance(await within(leadership.lost.wait(), 5, "loss"), geeh.ElectionError)
    assert await keys(client, name) == []


async def test_a_shared_session_serves_many_campaigns_without_growing(
    client: geeh.Client, name: str
) -> None:
    session = await client.session(ttl=10)
    election = client.election(name)
    baseline = len(session.expired._callbacks)
    for i in range(5):
        leadership = await election.campaign(f"round {i}", session=session)
        await leadership.resign()
        assert session.alive
    assert len(session.expired._callbacks) == baseline, "campaigns left callbacks behind"
    assert await keys(client, name) == []
    await session.close()

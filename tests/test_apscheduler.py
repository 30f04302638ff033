"""geeh.integrations.apscheduler: one scheduler among several runs the jobs, each run claimed."""

from __future__ import annotations

import asyncio
import datetime
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_etcd import fake_client, installed
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.net.retry import LEASE_REVOKE
from geeh.testing import EtcdFactory, LocalEtcdCluster

pytest.importorskip("apscheduler")

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from geeh.integrations.apscheduler import LeaderExecutor, LeaderScheduler
from geeh.integrations.claims import stamp

UTC = datetime.UTC
ALIGNED = datetime.datetime(2020, 1, 1, tzinfo=UTC)  # every replica fires at the same times


class Runs:
    """Every run that executed, as (replica, scheduled fire time), from APScheduler's events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, datetime.datetime]] = []

    def follow(self, scheduler: Any, replica: str) -> None:
        def executed(event: Any) -> None:
            with self.lock:
                self.seen.append((replica, event.scheduled_run_time))

        scheduler.add_listener(executed, EVENT_JOB_EXECUTED)

    def by(self, replica: str) -> list[datetime.datetime]:
        with self.lock:
            return [t for r, t in self.seen if r == replica]

    def assert_once_each(self) -> None:
        with self.lock:
            times = [t for _, t in self.seen]
        duplicates = {t for t in times if times.count(t) > 1}
        assert not duplicates, f"fire times run twice: {sorted(duplicates)}"


def scheduler_with_job(kind: type[Any] = AsyncIOScheduler, **options: Any) -> Any:
    scheduler = kind(timezone=UTC, **options)
    scheduler.add_job(
        lambda: None, "interval", seconds=0.2, start_date=ALIGNED, id="tick", misfire_grace_time=5
    )
    return scheduler


@pytest.fixture
async def clients(etcd: LocalEtcdCluster) -> AsyncIterator[list[geeh.Client]]:
    async with (
        geeh.Client(etcd.endpoints) as a,
        geeh.Client(etcd.endpoints) as b,
        geeh.Client(etcd.endpoints) as operator,
    ):
        yield [a, b, operator]


async def test_only_the_leader_runs_and_a_standby_takes_over(
    clients: list[geeh.Client], name: str
) -> None:
    a, b, operator = clients
    runs = Runs()
    first, second = scheduler_with_job(), scheduler_with_job()
    runs.follow(first, "a")
    runs.follow(second, "b")
    async with LeaderScheduler(first, a.election(name), "a", ttl=5) as leader_a:
        await eventually(lambda: len(runs.by("a")) >= 3, what="runs on the leader")
        async with LeaderScheduler(second, b.election(name), "b", ttl=5) as leader_b:
            assert leader_a.leadership is not None and leader_b.leadership is None
            assert runs.by("b") == []
            # The leader's lease revoked from outside: it pauses, the standby takes over.
            await operator.core.transport.call(
                LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=leader_a.leadership.lease)
            )
            await eventually(lambda: len(runs.by("b")) >= 3, what="runs on the new leader")
            assert leader_b.leadership is not None
            last_a = max(runs.by("a"))
            assert all(t > last_a for t in runs.by("b"))
            assert first.state == 2  # STATE_PAUSED: a standby again, not crashed
            await eventually(lambda: leader_a.leadership is None, what="a is a standby")
        # b closed: a resigned hand-over, and a leads again.
        count = len(runs.by("a"))
        await eventually(lambda: len(runs.by("a")) > count + 2, what="runs on a again")
    runs.assert_once_each()
    assert not first.running and not second.running


async def test_a_leader_cut_off_from_etcd_pauses_and_leads_again_once_it_is_back(
    etcd_factory: EtcdFactory, name: str
) -> None:
    cluster = etcd_factory()
    runs = Runs()
    scheduler = scheduler_with_job()
    runs.follow(scheduler, "a")
    async with (
        geeh.Client(cluster.endpoints, request_timeout=1.0, dial_timeout=2.0) as client,
        LeaderScheduler(scheduler, client.election(name), ttl=2) as leader,
    ):
        await eventually(lambda: len(runs.by("a")) >= 2, what="runs")
        await asyncio.to_thread(cluster.kill, 0)
        await eventually(lambda: leader.leadership is None, what="the loss at the deadline")
        assert scheduler.state == 2  # STATE_PAUSED
        before = len(runs.by("a"))
        await asyncio.to_thread(cluster.restart, 0)
        await eventually(lambda: len(runs.by("a")) > before, timeout=30, what="runs again")
        assert leader.leadership is not None
    runs.assert_once_each()


async def test_a_deposed_leader_claims_nothing_and_no_time_runs_twice(
    clients: list[geeh.Client], name: str
) -> None:
    a, b, operator = clients
    leader_a = LeaderScheduler(AsyncIOScheduler(timezone=UTC), a.election(name), "a", ttl=5)
    leader_b = LeaderScheduler(AsyncIOScheduler(timezone=UTC), b.election(name), "b", ttl=5)
    async with leader_a:
        await eventually(lambda: leader_a.leadership is not None, what="a leads")
        await leader_b.start()
        t = [ALIGNED + datetime.timedelta(seconds=s) for s in range(5)]
        assert await leader_a.claim("job", [t[1]]) == [t[1]]
        assert await leader_a.claim("job", [t[1]]) == []  # once only
        assert await leader_a.claim("job", [t[0], t[1], t[2]]) == [t[2]]
        assert await leader_b.claim("job", [t[3]]) == []  # a standby claims nothing
        held = leader_a.leadership
        assert held is not None
        # a is deposed (its key deleted): as if it was paused while b took over.
        await operator.delete(held.key)
        await eventually(lambda: leader_b.leadership is not None, what="b leads")
        # a's scheduler, resumed late, still tries: its claim is fenced out.
        leader_a._leadership = held  # as if a had not yet seen its loss
        assert await leader_a.claim("job", [t[3]]) == []
        assert await leader_b.claim("job", [t[2], t[3]]) == [t[3]]
        stored = await operator.get(leader_b.claims + b"job")
        assert stored is not None and stored.value == stamp(t[3])
        await leader_b.aclose()


async def test_a_deposed_leader_unaware_of_its_loss_is_fenced_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leader paused while it was deposed wakes up still believing it leads: its claim
    must fail in etcd (the fence), not in a local check. Scripted: the fake etcd deletes the
    key and the watch says nothing."""
    async with installed(monkeypatch) as fake, fake_client() as client:
        leader = LeaderScheduler(AsyncIOScheduler(timezone=UTC), client.election("e"), "a")
        async with leader:
            held = await eventually(lambda: leader.leadership, what="a leads")
            assert await leader.claim("job", [ALIGNED]) == [ALIGNED]
            fake.delete(held.key)  # deposed; no watch event delivered
            assert held.is_leader  # it does not know yet
            later = ALIGNED + datetime.timedelta(seconds=1)
            assert await leader.claim("job", [later]) == []
            assert not held.is_leader  # the failed fence told it
            assert fake.state()[leader.claims + b"job"].value == stamp(ALIGNED)


async def test_background_scheduler_from_blocking_code(etcd: LocalEtcdCluster, name: str) -> None:
    def blocking() -> list[datetime.datetime]:
        runs = Runs()
        with geeh.ActiveCompletionQueue() as queue:
            client = queue.client(etcd.endpoints)
            scheduler = scheduler_with_job(BackgroundScheduler)
            runs.follow(scheduler, "a")
            with LeaderScheduler(scheduler, client.election(name), ttl=5, queue=queue):
                done = threading.Event()
                scheduler.add_listener(lambda e: len(runs.by("a")) >= 3 and done.set())
                assert done.wait(15), "no runs"
            assert not scheduler.running
        runs.assert_once_each()
        return runs.by("a")

    assert len(await asyncio.to_thread(blocking)) >= 3


async def test_blocking_close_after_the_queue_closed(etcd: LocalEtcdCluster, name: str) -> None:
    def blocking() -> bool:
        queue = geeh.ActiveCompletionQueue()
        scheduler = scheduler_with_job(BackgroundScheduler)
        election = queue.client(etcd.endpoints).election(name)
        leader = LeaderScheduler(scheduler, election, ttl=5, queue=queue).__enter__()
        queue.close()  # the wrong order: the queue (and its client), then the scheduler
        leader.close()
        leader.close()  # twice: harmless
        return bool(scheduler.running)

    assert await asyncio.to_thread(blocking) is False


async def test_close_waits_for_a_hung_job_only_within_grace(
    etcd: LocalEtcdCluster, name: str
) -> None:
    def blocking() -> geeh.Leader | None:
        started, release = threading.Event(), threading.Event()

        def hang() -> None:
            started.set()
            release.wait(30)

        with geeh.ActiveCompletionQueue() as queue:
            client = queue.client(etcd.endpoints)
            scheduler = BackgroundScheduler(timezone=UTC)
            scheduler.add_job(hang, "interval", seconds=0.2, start_date=ALIGNED, id="hang")
            election = client.election(name)
            with LeaderScheduler(scheduler, election, ttl=5, grace=0.5, queue=queue):
                assert started.wait(15), "the job did not start"
            try:
                return queue.call(election.leader())  # resigned, the job still running
            finally:
                release.set()

    assert await within(asyncio.to_thread(blocking), 20, "a bounded close") is None


async def test_misuse_is_refused(clients: list[geeh.Client], name: str) -> None:
    client = clients[0]
    election = client.election(name)
    with pytest.raises(geeh.InvalidArgument, match="BlockingScheduler"):
        LeaderScheduler(BlockingScheduler(), election)
    with pytest.raises(geeh.InvalidArgument, match="APScheduler 3 scheduler"):
        LeaderScheduler(object(), election)

    started = AsyncIOScheduler()
    started.start(paused=True)
    with pytest.raises(geeh.InvalidArgument, match="already started"):
        await LeaderScheduler(started, election).start()
    started.shutdown(wait=False)

    # A job on an executor that does not claim is refused; the scheduler is left stopped.
    plain = AsyncIOScheduler(executors={"pool": ThreadPoolExecutor()})
    plain.add_job(print, "interval", seconds=60, executor="pool")
    with pytest.raises(geeh.InvalidArgument, match=r"'pool'.*not a LeaderExecutor"):
        await LeaderScheduler(plain, election).start()
    await eventually(lambda: not plain.running, what="the scheduler stopped")
    async with LeaderScheduler(plain, election):  # nothing left behind by the refusal
        pass  # (APScheduler's memory store dropped the job at the shutdown)

    # The same, wrapped: accepted.
    wrapped = AsyncIOScheduler(executors={"pool": LeaderExecutor(ThreadPoolExecutor())})
    wrapped.add_job(print, "interval", seconds=60, executor="pool")
    async with LeaderScheduler(wrapped, election) as leader:
        await eventually(lambda: leader.leadership is not None, what="elected")
    assert not wrapped.running

    # A LeaderExecutor outside a LeaderScheduler refuses to start.
    alone = AsyncIOScheduler(executors={"default": LeaderExecutor()})
    with pytest.raises(geeh.InvalidArgument, match="only under geeh's LeaderScheduler"):
        alone.start()

    closing = LeaderScheduler(AsyncIOScheduler(), election)
    await within(closing.start(), 10, "start")
    await closing.aclose()
    await closing.aclose()  # twice: harmless
    with pytest.raises(geeh.InvalidArgument, match="queue="):
        closing.__enter__()


# -- replicas in processes of their own, as deployed: the leader killed, then paused ---------

REPLICA = str(Path(__file__).parent / "support" / "scheduler_replica.py")


def read_runs(path: Path) -> list[tuple[int, bytes]]:
    """(pid, fire time) of every run recorded so far; a line still being written is left."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]
    return [(int(pid), when) for pid, when in (line.split() for line in lines)]


@pytest.mark.slow
async def test_replicas_under_sigkill_and_sigstop(
    etcd: LocalEtcdCluster, name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    ttl = 2
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            REPLICA,
            etcd.endpoints[0],
            name,
            str(runs),
            str(ttl),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    by_pid = {p.pid: p for p in processes}
    try:
        for process in processes:
            assert process.stdout is not None
            assert await within(process.stdout.readline(), 30, "ready") == b"ready\n"
        async with geeh.Client(etcd.endpoints) as client:
            election = client.election(name)

            async def leader_pid() -> int | None:
                leader = await election.leader()
                return int(leader.value) if leader is not None else None

            async def runs_by_other_than(*pids: int) -> int | None:
                later = [pid for pid, _ in read_runs(runs) if pid not in pids]
                return later[-1] if later else None

            first = await eventually(leader_pid, what="a leader")
            await eventually(lambda: len(read_runs(runs)) >= 2, what="runs")

            # SIGKILL the leader: another replica takes over and runs the next fire times.
            by_pid[first].kill()
            await by_pid[first].wait()
            second = await eventually(
                lambda: runs_by_other_than(first), timeout=20, what="runs after the kill"
            )

            # SIGSTOP the new leader for 2 x TTL: the third replica takes over; once resumed,
            # the paused one goes back to standby (it does not crash, and runs nothing twice).
            by_pid[second].send_signal(signal.SIGSTOP)
            third = await eventually(
                lambda: runs_by_other_than(first, second), timeout=20, what="runs while paused"
            )
            await asyncio.sleep(ttl)  # the fault's length (2 x TTL in all), not a wait for state
            by_pid[second].send_signal(signal.SIGCONT)

            async def two_candidates() -> bool:
                return len(await election.candidates(ttl=False)) == 2

            await eventually(two_candidates, timeout=20, what="the resumed replica back in line")
            assert await leader_pid() == third
            count = len(read_runs(runs))
            await eventually(lambda: len(read_runs(runs)) >= count + 2, what="runs go on")
            assert by_pid[second].returncode is None

        for pid in (second, third):
            by_pid[pid].terminate()
        for pid in (second, third):
            assert await within(by_pid[pid].wait(), 30, "a graceful stop") == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    times = [when for _, when in read_runs(runs)]
    assert len(times) == len(set(times)), "a fire time ran twice"
    pids = {pid for pid, _ in read_runs(runs)}
    assert {first, second, third} <= pids

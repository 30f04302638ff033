"""Sessions and leaderships over scripted fakes: orderings a real etcd cannot be made to
produce on demand (see support/fakes.py). The same behaviours are tested against a real etcd
in test_leadership.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from support.fakes import FakeTransport, fake_core, fake_leadership, fake_session
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.errors import EtcdError, EtcdUnavailable
from geeh.lessor import Lessor
from geeh.net.retry import LEASE_REVOKE, TXN
from geeh.session import TIMER_STEP, Pause, now


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background clean-up pauses seconds between attempts; against fakes, no need."""
    monkeypatch.setattr(Pause, "next", lambda self: 0.01)


def unavailable(_: object) -> EtcdUnavailable:
    return EtcdUnavailable("revoke lease: no etcd endpoint answered in time", code="UNAVAILABLE")


def failing(times: int, then: object) -> object:
    """A handler that fails ``times`` times (etcd unreachable), then returns ``then``."""
    calls = [0]

    def handler(_: object) -> object:
        calls[0] += 1
        return unavailable(_) if calls[0] <= times else then

    return handler


# -- finding 6: user callbacks are isolated ---------------------------------------------------


async def test_a_raising_loss_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signal = geeh.LossSignal()
    seen: list[object] = []

    def boom(reason: BaseException | None) -> None:
        raise RuntimeError("user bug")

    signal.add_callback(boom)
    signal.add_callback(seen.append)
    reason = geeh.SessionExpired("gone")
    assert signal.set(reason) is True
    assert seen == [reason]
    assert any("user bug" in (r.exc_text or "") for r in caplog.records if r.levelname == "ERROR")
    signal.add_callback(boom)  # already set: called at once, still isolated
    assert signal.is_set() and signal.reason is reason


async def test_a_raising_callback_cannot_stop_a_resign() -> None:
    core, transport, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core))

    def boom(reason: BaseException | None) -> None:
        raise RuntimeError("user bug")

    leadership.lost.add_callback(boom)
    await leadership.resign()
    assert transport.count(LEASE_REVOKE.path) == 1, "the revoke was not sent"
    assert leadership.lost.is_set() and leadership.lost.reason is None
    await core.close()


# -- finding 9: is_leader, lost and the reason always agree -----------------------------------


async def test_an_expiry_is_seen_at_once_and_a_resign_cannot_hide_it() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    leadership.session.deadline = now() - 0.001  # passed, and no loop step since
    assert not leadership.is_leader
    assert leadership.lost.is_set(), "is_leader and lost disagree"
    assert isinstance(leadership.lost.reason, geeh.SessionExpired)
    await leadership.resign()  # what `async with` does on the way out
    assert isinstance(await leadership.lost, geeh.SessionExpired), "the loss became a resign"
    await core.close()


async def test_lost_read_first_is_as_exact_as_is_leader() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    leadership.session.deadline = now() - 0.001
    assert isinstance(leadership.lost.reason, geeh.SessionExpired)  # read before is_leader
    assert not leadership.is_leader and not leadership.session.alive
    with pytest.raises(geeh.NotLeader):
        await leadership.proclaim(b"x")
    await core.close()


async def test_a_deadline_read_off_the_loop_reads_lost_and_the_loop_expires() -> None:
    """A blocking caller's thread (LeaderElection.elected, Celery beat's tick) reads while
    the loop is stuck: it must see the loss at once and never act on the loop's objects."""
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    loop_thread = threading.current_thread()
    ended_on: list[threading.Thread] = []
    leadership.lost.add_callback(lambda reason: ended_on.append(threading.current_thread()))
    leadership.session.deadline = now() - 0.001  # passed, and no loop step since
    read: list[object] = []

    def read_from_another_thread() -> None:
        try:
            read.append((leadership.is_leader, leadership.session.alive))
        except BaseException as err:  # the bug: "RuntimeError: no running event loop"
            read.append(err)

    reader = threading.Thread(target=read_from_another_thread)
    reader.start()
    reader.join()  # on the loop's thread: the loop cannot run until the read is done
    assert read == [(False, False)], "off the loop a passed deadline reads as lost"
    assert ended_on == [], "the loss was signalled off the loop's thread"
    reason = await within(leadership.lost.wait(), 5, "the loop to signal the loss")
    assert isinstance(reason, geeh.SessionExpired)
    assert ended_on == [loop_thread]
    await core.close()


# -- finding 10: the deadline runs on while the machine is suspended --------------------------


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="no CLOCK_BOOTTIME")
async def test_time_spent_suspended_counts_towards_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    waiter = asyncio.ensure_future(leadership.lost.wait())
    real = time.clock_gettime

    def suspended(clock: int) -> float:  # 60 s asleep: BOOTTIME moved on, MONOTONIC did not
        return real(clock) + (60.0 if clock == time.CLOCK_BOOTTIME else 0.0)

    monkeypatch.setattr(time, "clock_gettime", suspended)
    # Nobody reads is_leader: the timer itself notices, within one TIMER_STEP of loop time.
    reason = await within(waiter, TIMER_STEP + 2, "the loss after the suspend")
    assert isinstance(reason, geeh.SessionExpired)
    assert not leadership.is_leader
    monkeypatch.undo()
    await core.close()


# -- finding 1: a failed resign leaves no ghost -----------------------------------------------


async def test_a_failed_resign_stops_the_keepalives_and_revokes_in_the_background() -> None:
    core, transport, lessor = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    await eventually(lambda: lessor.pending, what="the first keepalive")
    transport.handlers[LEASE_REVOKE.path] = failing(3, rpc_pb2.LeaseRevokeResponse())
    with pytest.raises(EtcdUnavailable):
        await leadership.resign(timeout=0.5)
    # Nothing keeps the lease alive any more: the keepalive in flight was cancelled.
    await eventually(lambda: lessor.cancelled == 1, what="the keepalive to stop")
    sent = lessor.sent
    # The background revoke goes on until etcd answers.
    await eventually(lambda: transport.count(LEASE_REVOKE.path) == 4, what="revoke retries")
    await eventually(lambda: len(core.tasks) == 0, what="the background work to end")
    assert lessor.sent == sent, "a keepalive was sent after the failed resign"
    assert not leadership.is_leader and leadership.lost.reason is None
    await leadership.resign()  # the state was kept: a retry revokes at once
    assert transport.count(LEASE_REVOKE.path) == 5
    await core.close()


async def test_a_failed_resign_in_a_shared_session_deletes_the_key_in_the_background() -> None:
    core, transport, lessor = fake_core()
    session = await fake_session(core, ttl=30)
    leadership = fake_leadership(core, session, owns_session=False)
    transport.handlers[TXN.path] = failing(2, rpc_pb2.TxnResponse(succeeded=True))
    with pytest.raises(EtcdUnavailable):
        await leadership.resign(timeout=0.5)
    await eventually(lambda: transport.count(TXN.path) == 3, what="delete retries")
    await eventually(lambda: len(core.tasks) == 0, what="the background work to end")
    assert session.alive and lessor.cancelled == 0, "the shared session was touched"
    await core.close()


# -- finding 8: a loss revokes the lease ------------------------------------------------------


async def test_a_loss_at_the_deadline_revokes_until_etcd_answers() -> None:
    core, transport, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    not_found = EtcdError("revoke lease: requested lease not found", code="NOT_FOUND")
    transport.handlers[LEASE_REVOKE.path] = failing(2, not_found)
    leadership.session.deadline = now() - 0.001
    assert isinstance(leadership.lost.reason, geeh.SessionExpired)
    await eventually(lambda: len(core.tasks) == 0, what="the background revoke to end")
    assert transport.count(LEASE_REVOKE.path) == 3, "NOT_FOUND is an answer: no more retries"
    assert core.sizes()["leaderships"] == 0 and core.sizes()["sessions"] == 0
    await core.close()
    assert transport.count(LEASE_REVOKE.path) == 3


async def test_a_removed_key_revokes_the_lease_until_etcd_answers() -> None:
    core, transport, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    transport.handlers[LEASE_REVOKE.path] = failing(2, rpc_pb2.LeaseRevokeResponse())
    leadership._on_gone(_done(geeh.CandidateRemoved("deleted")))
    await eventually(lambda: len(core.tasks) == 0, what="the background revoke to end")
    assert transport.count(LEASE_REVOKE.path) == 3
    await core.close()


async def test_a_shared_session_that_expires_revokes_its_lease() -> None:
    core, transport, _ = fake_core()
    session = await fake_session(core, ttl=30)
    leadership = fake_leadership(core, session, owns_session=False)
    session.deadline = now() - 0.001
    assert not session.alive and not leadership.is_leader
    await eventually(lambda: len(core.tasks) == 0, what="the background revoke to end")
    assert transport.count(LEASE_REVOKE.path) == 1
    await core.close()


async def test_close_bounds_a_revoke_that_never_gets_an_answer() -> None:
    core, transport, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    transport.handlers[LEASE_REVOKE.path] = unavailable
    leadership.session.deadline = now() - 0.001
    assert not leadership.is_leader
    await eventually(lambda: transport.count(LEASE_REVOKE.path) >= 2, what="retries")
    await within(core.close(timeout=0.2), 5, "close despite the retries")
    assert len(core.tasks) == 0 and transport.closed


# -- finding 7: keepalive answers, matched in order, leave nothing behind ---------------------


class OpenLessor(Lessor):
    """A lessor whose stream is open at once, and whose requests the test reads."""

    def __init__(self) -> None:
        super().__init__(FakeTransport())  # type: ignore[arg-type]
        self.requests: list[rpc_pb2.LeaseKeepAliveRequest] = []

    async def wait_open(self) -> None:
        pass

    def send(self, request: rpc_pb2.LeaseKeepAliveRequest) -> bool:
        self.requests.append(request)
        return True


async def test_a_late_keepalive_answer_is_not_taken_for_the_next_one() -> None:
    lessor = OpenLessor()
    with pytest.raises(ConnectionError):
        await lessor.keepalive(7, timeout=0.01)  # no answer in time
    second = asyncio.ensure_future(lessor.keepalive(7, timeout=5))
    await eventually(lambda: len(lessor.requests) == 2, what="the second keepalive")
    lessor.received(rpc_pb2.LeaseKeepAliveResponse(ID=7, TTL=30))  # late: the first's
    lessor.received(rpc_pb2.LeaseKeepAliveResponse(ID=7, TTL=29))  # the second's
    assert await second == 29, "the answer to an earlier keepalive extended the lease"
    assert lessor.waiting == 0, "an emptied queue was left behind"


async def test_a_keepalive_cancelled_as_its_answer_arrives_is_cancelled() -> None:
    """A closing session cancels its keepalive task: the cancellation must not be lost when
    the answer lands in the same loop step (else the task sleeps one more interval)."""
    lessor = OpenLessor()
    task = asyncio.ensure_future(lessor.keepalive(7, timeout=5))
    await eventually(lambda: lessor.requests, what="the keepalive")
    lessor.received(rpc_pb2.LeaseKeepAliveResponse(ID=7, TTL=30))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- finding 7 and 3: close always finishes ---------------------------------------------------


async def test_close_goes_on_when_a_part_fails(caplog: pytest.LogCaptureFixture) -> None:
    core, transport, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core))

    async def broken() -> None:
        raise RuntimeError("hub bug")

    core.watches.close = broken  # type: ignore[method-assign]
    await core.close()
    assert transport.closed, "the channels were left open"
    assert leadership.lost.is_set()
    assert any("hub bug" in (r.exc_text or "") for r in caplog.records)


async def test_a_dead_key_watcher_is_a_loss_and_does_not_stop_close() -> None:
    core, transport, _ = fake_core()
    started = asyncio.Event()

    async def dies() -> None:  # as a key watcher whose re-read after compaction failed
        await started.wait()
        raise EtcdUnavailable("campaign: no etcd endpoint answered in time")

    leadership = fake_leadership(
        core, await fake_session(core), watcher=asyncio.ensure_future(dies())
    )
    started.set()
    reason = await within(leadership.lost.wait(), 5, "the loss")
    assert isinstance(reason, geeh.CandidateRemoved)
    await within(core.close(), 5, "close")
    assert transport.closed


async def test_a_cancelled_close_is_finished_all_the_same() -> None:
    core, transport, _ = fake_core()
    release = asyncio.Event()
    real_close = core.watches.close

    async def slow() -> None:
        await release.wait()
        await real_close()

    core.watches.close = slow  # type: ignore[method-assign]
    first = asyncio.ensure_future(core.close())
    await eventually(lambda: core.closed and len(core.leaderships) == 0, what="close started")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    await within(core.close(), 5, "a second close")  # waits for the same work
    assert transport.closed


async def test_session_close_does_not_swallow_its_callers_cancellation() -> None:
    core, _, lessor = fake_core()
    session = await fake_session(core)
    await eventually(lambda: lessor.pending, what="the first keepalive")
    lessor.slow_cancel = asyncio.Event()
    closer = asyncio.ensure_future(session.close(revoke=False))
    await eventually(lambda: lessor.cancelled == 1, what="the keepalive task to be stopping")
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    lessor.slow_cancel.set()
    await session.close(revoke=False)  # harmless again
    await core.close()


async def test_leadership_close_does_not_swallow_its_callers_cancellation() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core))
    leadership._watcher.cancel()
    stuck = asyncio.Event()

    async def slow_to_stop() -> None:  # takes its time to end once cancelled
        while not stuck.is_set():
            try:
                await stuck.wait()
            except asyncio.CancelledError:
                continue

    leadership._watcher = asyncio.ensure_future(slow_to_stop())
    await asyncio.sleep(0)  # let it start, so that its cancellation lands in the try
    closer = asyncio.ensure_future(leadership.aclose())
    await eventually(lambda: leadership.lost.is_set(), what="the resign")
    await asyncio.sleep(0)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    stuck.set()
    await core.close()


# -- issue 11: the leadership block -----------------------------------------------------------


async def test_a_block_awaiting_is_interrupted_by_a_loss() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    reached = asyncio.Event()

    async def block() -> None:
        async with leadership:
            reached.set()
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(block())
    await reached.wait()
    leadership._on_gone(_done(geeh.CandidateRemoved("deleted")))
    with pytest.raises(geeh.LeadershipLost) as caught:
        await within(task, 5, "the block to end")
    assert isinstance(caught.value.reason, geeh.CandidateRemoved)
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert task.cancelling() == 0
    await core.close()


async def test_a_block_that_raises_its_own_error_after_a_loss_leaks_no_cancellation() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    with pytest.raises(ValueError, match="not leader"):
        async with leadership:
            leadership.session.deadline = now() - 0.001
            if not leadership.is_leader:  # sets the loss, and asks for the cancellation
                raise ValueError("not leader any more")
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # no cancellation left pending for the next await
    assert isinstance(leadership.lost.reason, geeh.SessionExpired)
    await core.close()


async def test_a_block_that_ends_without_awaiting_after_a_loss_raises_leadership_lost() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    with pytest.raises(geeh.LeadershipLost) as caught:
        async with leadership:
            leadership.session.deadline = now() - 0.001
            assert not leadership.is_leader
    assert isinstance(caught.value.reason, geeh.SessionExpired)
    await asyncio.sleep(0)  # no cancellation left pending
    await core.close()


async def test_nested_timeouts_keep_working_inside_a_block() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    with pytest.raises(geeh.LeadershipLost):
        async with leadership:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(3600)
            assert leadership.is_leader  # the inner timeout was not a loss
            async with asyncio.timeout(3600):
                leadership._on_gone(_done(geeh.CandidateRemoved("deleted")))
                await asyncio.sleep(3600)
    await core.close()


async def test_a_loss_and_an_inner_timeout_at_once_end_as_a_loss() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    with pytest.raises(geeh.LeadershipLost):
        async with leadership:
            async with asyncio.timeout(0):  # expires at the first await
                leadership._on_gone(_done(geeh.CandidateRemoved("deleted")))
                await asyncio.sleep(3600)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await core.close()


async def test_a_cancellation_from_outside_goes_through_unchanged() -> None:
    core, transport, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    reached = asyncio.Event()

    async def block(lose: bool) -> None:
        async with leadership:
            reached.set()
            if lose:
                leadership._on_gone(_done(geeh.CandidateRemoved("deleted")))
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(block(lose=False))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leadership.lost.reason is None and transport.count(LEASE_REVOKE.path) == 1

    # Both at once: the outside cancellation wins, and stays counted.
    other = fake_leadership(core, await fake_session(core, ttl=30))
    leadership = other
    reached.clear()
    task = asyncio.ensure_future(block(lose=True))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1
    await core.close()


async def test_cancel_on_loss_false_lets_the_block_run_on() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    leadership.cancel_on_loss = False
    async with leadership:
        leadership._on_gone(_done(geeh.CandidateRemoved("deleted")))
        await asyncio.sleep(0)
        assert not leadership.is_leader
    await core.close()


async def test_a_block_entered_after_the_loss_does_not_run() -> None:
    core, _, _ = fake_core()
    leadership = fake_leadership(core, await fake_session(core, ttl=30))
    leadership.session.deadline = now() - 0.001
    ran = False
    with pytest.raises(geeh.LeadershipLost):
        async with leadership:
            ran = True
    assert not ran
    await core.close()


def _done(reason: BaseException) -> asyncio.Future[BaseException]:
    future: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    future.set_result(reason)
    return future


def test_logging_is_quiet_enough() -> None:
    assert logging.getLogger("geeh").level in (logging.NOTSET, logging.WARNING)

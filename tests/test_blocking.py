"""The blocking facade (the C++ gee-h's API) against a real etcd."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

import pytest
from support.kv import joined, revoke

import geeh
from geeh.session import now
from geeh.testing import LocalEtcdCluster


def next_change(changes: queue.Queue[tuple[str, str]], what: str) -> tuple[str, str]:
    try:
        return changes.get(timeout=5)
    except queue.Empty:
        pytest.fail(f"timed out after 5s waiting for {what}")


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` from this (blocking) thread; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def test_join_and_watch_like_the_seed(etcd: LocalEtcdCluster, name: str) -> None:
    with geeh.ActiveCompletionQueue() as q:
        changes: queue.Queue[tuple[str, str]] = queue.Queue()
        observer = geeh.watch_election(q, etcd.endpoints, name)
        token = observer.subscribe(lambda key, value: changes.put((key, value)))
        assert next_change(changes, "initial no-leader") == ("", "")

        election = geeh.LeaderElection(q, etcd.endpoints, name, "my-value", ttl=5)
        assert election.campaign().result(timeout=5) is True
        assert election.elected
        assert election.key.startswith(f"{name}/") and election.token > 0
        assert next_change(changes, "leader") == (election.key, "my-value")

        election.proclaim("v2")
        assert next_change(changes, "proclaim") == (election.key, "v2")

        second = geeh.LeaderElection(q, etcd.endpoints, name, b"second", ttl=5)
        pending = second.campaign()
        q.call(joined(second._client, name, 2))
        election.resign()
        assert not election.elected
        assert pending.result(timeout=5) is True
        assert next_change(changes, "hand-off") == (second.key, "second")
        token.unsubscribe()
        second.resign()
        assert changes.empty(), "no callback after unsubscribe"
    assert not any(t.name.startswith("geeh") for t in threading.enumerate()), "threads leaked"


def test_resign_before_elected_withdraws(etcd: LocalEtcdCluster, name: str) -> None:
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        leader = geeh.LeaderElection(q, client, name, "leader", ttl=5)
        assert leader.campaign().result(timeout=5)
        waiter = geeh.LeaderElection(q, client, name, "waiter", ttl=5)
        future = waiter.campaign()
        q.call(joined(client, name, 2))
        waiter.resign()
        assert future.result(timeout=5) is False
        leader.resign()
        assert q.call(client.election(name).leader()) is None


def test_raising_and_slow_callbacks_never_stop_the_observer(
    etcd: LocalEtcdCluster, name: str
) -> None:
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        observer = geeh.watch_election(q, client, name)
        release = threading.Event()
        seen: queue.Queue[tuple[str, str]] = queue.Queue()

        def bad(key: str, value: str) -> None:
            raise RuntimeError("callback bug")

        def slow(key: str, value: str) -> None:
            release.wait(10)
            seen.put((key, value))

        observer.subscribe(bad)
        observer.subscribe(slow)
        # While the slow callback blocks, the event loop still runs elections.
        election = geeh.LeaderElection(q, client, name, "v", ttl=5)
        assert election.campaign().result(timeout=5)
        assert q.call(client.election(name).leader(), timeout=5) is not None
        release.set()
        assert next_change(seen, "initial") == ("", "")
        assert next_change(seen, "leader") == (election.key, "v")
        election.resign()
        assert next_change(seen, "no leader") == ("", "")


def test_bad_arguments_fail_fast(etcd: LocalEtcdCluster) -> None:
    with geeh.ActiveCompletionQueue() as q:
        with pytest.raises(geeh.InvalidArgument, match="ttl"):
            geeh.LeaderElection(q, etcd.endpoints, "n", "v", ttl=0)
        with pytest.raises(geeh.InvalidArgument, match="value must be str or bytes"):
            geeh.LeaderElection(q, etcd.endpoints, "n", 3, ttl=5)  # type: ignore[arg-type]
        with pytest.raises(geeh.InvalidArgument, match="queue"):
            geeh.watch_election(None, etcd.endpoints, "n")  # type: ignore[arg-type]
        observer = geeh.watch_election(q, etcd.endpoints, "n")
        with pytest.raises(geeh.InvalidArgument, match="callable"):
            observer.subscribe("not a function")  # type: ignore[arg-type]


def test_queue_close_is_idempotent_and_final(etcd: LocalEtcdCluster, name: str) -> None:
    q = geeh.ActiveCompletionQueue()
    election = geeh.LeaderElection(q, etcd.endpoints, name, "v", ttl=5)
    assert election.campaign().result(timeout=5)
    q.close()
    q.close()
    with pytest.raises(geeh.ClosedError):
        q.client(etcd.endpoints)

    async def leader() -> geeh.Leader | None:
        async with geeh.Client(etcd.endpoints) as client:
            return await client.election(name).leader()

    assert asyncio.run(leader()) is None, "closing the queue resigns its elections"


def test_elected_is_cleared_on_loss_and_a_new_campaign_can_start(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """The C++ gee-h never cleared elected(); here it drops the moment leadership is lost."""
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        election = geeh.LeaderElection(q, client, name, "v", ttl=30)
        first = election.campaign()
        assert first.result(timeout=5)
        lost: queue.Queue[BaseException | None] = queue.Queue()
        election.on_lost(lost.put)
        q.call(revoke(client, election.leadership.lease))  # type: ignore[union-attr]
        assert election.wait_lost(timeout=5), "loss not signalled"
        assert isinstance(lost.get(timeout=5), geeh.ElectionError)
        assert not election.elected
        with pytest.raises(geeh.NotLeader):
            election.proclaim("x")
        again = election.campaign()
        assert again is not first
        assert again.result(timeout=5) and election.elected
        election.resign()


def test_elected_read_while_the_loop_is_stalled_past_the_deadline_is_false(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """``elected`` is read on the caller's thread: past the session's deadline it is False
    at once, even while the loop cannot run, and the read never touches the loop's objects
    (it used to expire the session from there: "no running event loop", which crashed beat).
    """
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        election = geeh.LeaderElection(q, client, name, "v", ttl=1)
        assert election.campaign().result(timeout=5) and election.elected
        leadership = election.leadership
        assert leadership is not None
        stalled, release = threading.Event(), threading.Event()

        def stall() -> None:  # a callback that blocks the loop: no keepalive, no timer
            stalled.set()
            release.wait(10)

        q.loop.call_soon_threadsafe(stall)
        try:
            assert stalled.wait(5), "the loop did not run the stall"
            deadline = leadership.session.deadline  # only the loop moves it: fixed now
            until(lambda: now() >= deadline, 5, "the session's deadline to pass")
            assert election.elected is False
            assert not leadership.is_leader and not leadership.session.alive
        finally:
            release.set()
        assert election.wait_lost(timeout=5), "the loop did not signal the loss"

        async def reason() -> BaseException | None:
            return leadership.lost.reason

        assert isinstance(q.call(reason()), geeh.SessionExpired)


def test_a_call_that_times_out_cancels_its_operation() -> None:
    with geeh.ActiveCompletionQueue() as q:
        ended = threading.Event()

        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                ended.set()

        with pytest.raises(geeh.Timeout) as raised:
            q.call(forever(), timeout=0.1)
        assert isinstance(raised.value, TimeoutError), "Timeout is still a TimeoutError"
        assert ended.is_set(), "the operation was left running after its timeout"

        async def own_timeout() -> None:
            raise TimeoutError("the operation's own")

        with pytest.raises(TimeoutError, match="the operation's own") as raised:
            q.call(own_timeout(), timeout=5)
        assert not isinstance(raised.value, geeh.Timeout)


def test_a_blocking_call_on_the_queues_thread_fails_at_once() -> None:
    with geeh.ActiveCompletionQueue() as q:

        async def nested() -> None:
            q.call(asyncio.sleep(0), timeout=5)

        with pytest.raises(geeh.WrongThread) as raised:
            q.call(nested(), timeout=5)
        assert isinstance(raised.value, RuntimeError)


def test_closing_the_queue_from_a_callback_on_its_loop(etcd: LocalEtcdCluster, name: str) -> None:
    q = geeh.ActiveCompletionQueue()
    election = geeh.LeaderElection(q, etcd.endpoints, name, "v", ttl=5)
    assert election.campaign().result(timeout=5)
    returned = threading.Event()

    def close_from_the_loop() -> None:
        q.close()
        returned.set()

    q.loop.call_soon_threadsafe(close_from_the_loop)
    assert returned.wait(5), "close() on the loop's thread blocked"
    q.close()  # waits for the close the callback started
    assert not q._thread.is_alive()
    assert not any(t.name.startswith("geeh") for t in threading.enumerate()), "threads leaked"
    with pytest.raises(geeh.ClosedError):
        q.client(etcd.endpoints)

    async def leader() -> geeh.Leader | None:
        async with geeh.Client(etcd.endpoints) as client:
            return await client.election(name).leader()

    assert asyncio.run(leader()) is None, "the close resigned the election"


def test_keys_and_values_are_str_and_lose_no_byte(etcd: LocalEtcdCluster, name: str) -> None:
    """Bytes that are not UTF-8 come back as surrogate escapes: encoded back, they are the
    bytes etcd holds, and passed back in, they write those same bytes."""
    raw = b"\xff\xfeok"
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        changes: queue.Queue[tuple[str, str]] = queue.Queue()
        observer = geeh.watch_election(q, client, name)
        observer.subscribe(lambda key, value: changes.put((key, value)))
        assert next_change(changes, "no leader") == ("", "")
        election = geeh.LeaderElection(q, client, name, raw, ttl=5)
        assert isinstance(election.value, str)
        assert election.value.encode("utf-8", "surrogateescape") == raw
        assert election.campaign().result(timeout=5)
        key, value = next_change(changes, "leader")
        assert (key, value) == (election.key, election.value)
        assert value.encode("utf-8", "surrogateescape") == raw
        election.proclaim(value + "!")
        key, value = next_change(changes, "proclaim")
        leader = q.call(client.election(name).leader(), timeout=5)
        assert leader is not None and leader.value == raw + b"!"
        assert value.encode("utf-8", "surrogateescape") == raw + b"!"
        election.resign()


def test_fenced_writes_from_blocking_code(etcd: LocalEtcdCluster, name: str) -> None:
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        election = geeh.LeaderElection(q, client, name, "v", ttl=30)
        with pytest.raises(geeh.NotLeader):
            election.put(f"{name}-data", "before")
        assert election.campaign().result(timeout=5)
        revision = election.put(f"{name}-data", "mine")
        result = election.txn([geeh.kv.mod_revision(f"{name}-data") == revision], [])
        assert result.succeeded
        q.call(revoke(client, election.leadership.lease))  # type: ignore[union-attr]
        assert election.wait_lost(timeout=5)
        with pytest.raises(geeh.NotLeader):
            election.put(f"{name}-data", "late")
        item = q.call(client.get(f"{name}-data"))
        assert item is not None and item.value == b"mine"


def test_run_on_a_thread_stops_when_leadership_ends(etcd: LocalEtcdCluster, name: str) -> None:
    events: queue.Queue[tuple[str, int]] = queue.Queue()
    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        election = geeh.LeaderElection(q, client, name, "v", ttl=30)

        def work(stop: threading.Event) -> None:
            token = election.token
            election.put(f"{name}-data", str(token))  # fenced, from the worker thread
            events.put(("start", token))
            stop.wait()
            events.put(("end", token))

        running = election.run(work)
        start, first = events.get(timeout=10)
        assert start == "start" and election.elected
        q.call(revoke(client, election.leadership.lease))  # type: ignore[union-attr]
        assert events.get(timeout=10) == ("end", first), "stop was set on the loss"
        start, second = events.get(timeout=10)
        assert start == "start" and second > first, "campaigned again"
        election.resign()
        assert events.get(timeout=10) == ("end", second)
        assert running.cancelled() or running.done()
        assert q.call(client.election(name).leader()) is None

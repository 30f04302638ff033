"""The blocking facade (the C++ gee-h's API) against a real etcd."""

from __future__ import annotations

import queue
import threading

import pytest
from support.kv import joined, revoke

import geeh
from geeh.testing import LocalEtcdCluster


def next_change(changes: queue.Queue[tuple[str, str]], what: str) -> tuple[str, str]:
    try:
        return changes.get(timeout=5)
    except queue.Empty:
        pytest.fail(f"timed out after 5s waiting for {what}")


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

    import asyncio

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

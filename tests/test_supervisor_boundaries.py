"""Election.run at its boundaries, against a real etcd: cancellation, slow and async
callbacks, outages, and the blocking facade's resign (the model test covers the orderings).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from support.kv import joined, keys, revoke
from support.wait import eventually, within

import geeh
from geeh.testing import LocalEtcdCluster, TcpProxy


async def test_work_cancelled_by_other_code_is_a_finished_term(
    client: geeh.Client, name: str
) -> None:
    """Work that awaited something another task cancelled: resign, and return."""

    async def work(leadership: geeh.Leadership) -> None:
        other = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(other.cancel)
        await other  # raises CancelledError: not the supervisor's, not the caller's

    run = client.election(name).run(work, b"v", ttl=5, again=False)
    assert await within(run, 5, "run") is None
    assert await keys(client, name) == [], "no ghost leader: the term resigned"


async def test_work_cancelled_by_other_code_campaigns_again(client: geeh.Client, name: str) -> None:
    terms: list[int] = []

    async def work(leadership: geeh.Leadership) -> None:
        terms.append(leadership.token)
        if len(terms) == 1:
            other = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(other.cancel)
            await other
        await asyncio.Event().wait()

    run = asyncio.ensure_future(client.election(name).run(work, b"v", ttl=5))
    await eventually(lambda: len(terms) == 2 or run.done(), what="a second term")
    assert not run.done(), "run() goes on: its caller did not cancel it"
    assert terms[1] > terms[0]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await keys(client, name) == []


async def test_cancelling_run_while_it_stops_work_waits_for_the_work(
    client: geeh.Client, name: str
) -> None:
    events: list[str] = []
    stopping = asyncio.Event()
    release = asyncio.Event()

    async def work(leadership: geeh.Leadership) -> None:
        events.append("work starts")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await release.wait()  # slow to stop
            events.append("work ends")
            raise

    run = asyncio.ensure_future(client.election(name).run(work, b"v", ttl=5, grace=0.1))
    await eventually(lambda: events == ["work starts"], what="work to start")
    leader = await client.election(name).leader()
    assert leader is not None
    await revoke(client, leader.lease)
    await within(stopping.wait(), 5, "the work to be told to stop")
    run.cancel()
    done, _ = await asyncio.wait({run}, timeout=0.3)  # a run that abandons work ends here
    events.append("run ended" if done else "run waits for the work")
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await within(run, 5, "run to end")
    assert events == ["work starts", "run waits for the work", "work ends"]


async def test_work_never_starts_after_the_loss_is_known(client: geeh.Client, name: str) -> None:
    """A slow on_elected outlives the lease: no work that term; the next term runs it."""
    elected: list[int] = []
    started: list[tuple[int, bool]] = []

    def on_elected(leadership: geeh.Leadership) -> None:
        elected.append(leadership.token)
        if len(elected) == 1:
            # Blocks the loop past the session's local deadline (etcd may grant more than 1).
            time.sleep(leadership.session.ttl)

    async def work(leadership: geeh.Leadership) -> None:
        started.append((leadership.token, leadership.is_leader))
        await asyncio.Event().wait()

    run = asyncio.ensure_future(client.election(name).run(work, b"v", ttl=1, on_elected=on_elected))
    await eventually(lambda: started or run.done(), what="work to start")
    assert not run.done()
    assert started == [(elected[-1], True)] and len(elected) == 2
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_again_survives_an_outage_longer_than_the_ttl(
    etcd: LocalEtcdCluster, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiting to win while etcd is cut off past the TTL: SessionExpired, retried."""
    caplog.set_level(logging.WARNING, logger="geeh.supervisor")
    started = asyncio.Event()

    async def work(leadership: geeh.Leadership) -> None:
        started.set()
        await asyncio.Event().wait()

    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        async with (
            geeh.Client(
                [proxy.endpoint], discover=False, attempt_timeout=0.3, request_timeout=1
            ) as a,
            geeh.Client(etcd.endpoints) as b,
        ):
            holder = await b.election(name).campaign(b"holder", ttl=5)
            run = asyncio.ensure_future(a.election(name).run(work, b"a", ttl=1))
            await joined(b, name, 2)
            proxy.blackhole()
            await eventually(
                lambda: "SessionExpired" in caplog.text or run.done(), what="the session to end"
            )
            proxy.pass_through()
            assert not run.done(), f"run() gave up: {run.exception()!r}"
            await joined(b, name, 2)  # joined again
            await holder.resign()
            await within(started.wait(), 10, "the work to start after the outage")
            assert "campaigning again" in caplog.text
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run


async def test_async_callbacks_are_awaited(
    client: geeh.Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[object] = []

    async def on_elected(leadership: geeh.Leadership) -> None:
        await asyncio.sleep(0)
        seen.append(("elected", leadership.is_leader))

    async def on_lost(leadership: geeh.Leadership, reason: BaseException | None) -> None:
        await asyncio.sleep(0)
        seen.append(("lost", reason))
        raise ValueError("async callback bug")

    async def work(leadership: geeh.Leadership) -> str:
        seen.append("work")
        return "done"

    caplog.set_level(logging.ERROR, logger="geeh")
    run = client.election(name).run(
        work, b"v", ttl=5, again=False, on_elected=on_elected, on_lost=on_lost
    )
    assert await within(run, 5, "run") == "done", "a raising callback changes nothing"
    assert seen == [("elected", True), "work", ("lost", None)]
    assert "async callback bug" in caplog.text


def test_blocking_resign_timeout_keeps_leadership_until_the_work_returned(
    etcd: LocalEtcdCluster, name: str
) -> None:
    started, stopping, release = threading.Event(), threading.Event(), threading.Event()

    def work(stop: threading.Event) -> None:
        started.set()
        stop.wait()
        stopping.set()
        release.wait(10)  # slow to stop

    with geeh.ActiveCompletionQueue() as q:
        client = q.client(etcd.endpoints)
        election = geeh.LeaderElection(q, client, name, "v", ttl=30)
        running = election.run(work)
        assert started.wait(10)
        with pytest.raises(geeh.Timeout):
            election.resign(timeout=0.5)
        assert stopping.wait(5), "stop was set"
        assert election.elected, "still leader while the work runs"
        assert q.call(client.election(name).leader()) is not None
        release.set()
        election.resign(timeout=10)
        assert q.call(client.election(name).leader()) is None
        assert running.cancelled()

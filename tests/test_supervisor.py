"""Election.run: work runs only while leader, stops on loss, and the terms never overlap."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from support.kv import keys, revoke
from support.wait import eventually, within

import geeh
from geeh.testing import LocalEtcdCluster, TcpProxy


class Journal:
    """What each worker did, in the order the event loop ran it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.started = asyncio.Event()

    def work(self, who: str) -> Any:
        async def work(leadership: geeh.Leadership) -> None:
            self.events.append(("start", who, leadership.token))
            self.started.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.events.append(("end", who, leadership.token))

        return work


async def test_terms_never_overlap_when_the_leader_is_cut_off(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """The safety promise: a's work ends (at its local deadline) before b's starts."""
    journal = Journal()
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        async with (
            geeh.Client([proxy.endpoint], attempt_timeout=0.5, discover=False) as a,
            geeh.Client(etcd.endpoints) as b,
        ):
            lost: list[BaseException | None] = []
            first = asyncio.ensure_future(
                a.election(name).run(
                    journal.work("a"), b"a", ttl=2, on_lost=lambda _, why: lost.append(why)
                )
            )
            await within(journal.started.wait(), 5, "a's work to start")
            journal.started.clear()
            second = asyncio.ensure_future(b.election(name).run(journal.work("b"), b"b", ttl=2))
            await eventually(lambda: _count(b, name, 2), what="b to join")
            proxy.blackhole()  # a hears nothing more: its lease runs out on etcd
            await within(journal.started.wait(), 10, "b's work to start")
            assert [e[:2] for e in journal.events] == [("start", "a"), ("end", "a"), ("start", "b")]
            assert journal.events[2][2] > journal.events[0][2], "tokens grow"
            assert isinstance(lost[0], geeh.SessionExpired)
            proxy.pass_through()
            for task in (first, second):
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert journal.events[-1][:2] == ("end", "b")
            await eventually(lambda: _count(b, name, 0), what="every key to go")


async def test_a_revoked_leader_stops_its_work(etcd: LocalEtcdCluster, name: str) -> None:
    journal = Journal()
    async with geeh.Client(etcd.endpoints) as a, geeh.Client(etcd.endpoints) as b:
        run = asyncio.ensure_future(a.election(name).run(journal.work("a"), b"a", ttl=5))
        await within(journal.started.wait(), 5, "work to start")
        journal.started.clear()
        leader = await b.election(name).leader()
        assert leader is not None
        await revoke(b, leader.lease)
        await within(journal.started.wait(), 5, "the next term")
        assert [e[0] for e in journal.events] == ["start", "end", "start"]
        assert journal.events[2][2] > journal.events[0][2]
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert await keys(a, name) == [], "a cancelled supervisor resigns"


async def test_work_that_returns_ends_the_run_when_not_again(
    client: geeh.Client, name: str
) -> None:
    async def work(leadership: geeh.Leadership) -> int:
        assert leadership.is_leader
        return leadership.token

    token = await within(client.election(name).run(work, b"v", ttl=5, again=False), 5, "run")
    assert token > 0
    assert await keys(client, name) == [], "resigned after the work returned"


async def test_work_that_raises_is_logged_and_run_again(
    client: geeh.Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    terms: list[int] = []

    async def work(leadership: geeh.Leadership) -> None:
        terms.append(leadership.token)
        if len(terms) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    def bad_callback(*_: object) -> None:
        raise ValueError("callback bug")

    caplog.set_level(logging.ERROR, logger="geeh")
    run = asyncio.ensure_future(
        client.election(name).run(work, b"v", ttl=5, on_elected=bad_callback, on_lost=bad_callback)
    )
    await eventually(lambda: len(terms) == 3, what="three terms")
    assert terms == sorted(set(terms)), "each term is a new win"
    assert "boom" in caplog.text and "callback bug" in caplog.text
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_work_that_raises_is_raised_when_not_again(client: geeh.Client, name: str) -> None:
    async def work(leadership: geeh.Leadership) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await within(client.election(name).run(work, b"v", ttl=5, again=False), 5, "run")
    assert await keys(client, name) == []


async def test_cancel_while_waiting_withdraws(client: geeh.Client, name: str) -> None:
    async with client.election(name).campaign(b"holder", ttl=5):
        run = asyncio.ensure_future(client.election(name).run(Journal().work("x"), b"x", ttl=5))
        await eventually(lambda: _count(client, name, 2), what="the run to join")
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert len(await keys(client, name)) == 1


async def test_run_returns_when_the_client_closes(etcd: LocalEtcdCluster, name: str) -> None:
    journal = Journal()
    client = geeh.Client(etcd.endpoints)
    await client.connect()
    run = asyncio.ensure_future(client.election(name).run(journal.work("x"), b"x", ttl=5))
    await within(journal.started.wait(), 5, "work to start")
    await client.close()
    assert await within(run, 5, "run to end") is None
    assert [e[0] for e in journal.events] == ["start", "end"]


async def _count(client: geeh.Client, name: str, n: int) -> bool:
    return len(await keys(client, name)) == n

"""Listeners: each event reported once, in order, from a real etcd; one that raises is harmless."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ETCD_BINARIES
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.listeners import loss_reason
from geeh.net.retry import LEASE_REVOKE
from geeh.testing import LocalEtcdCluster, TcpProxy, find_etcdctl, free_port


class Recorder(geeh.Listener):
    """Every event as (name, args), and an asyncio.Event per event name."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.seen: dict[str, asyncio.Event] = {}

    def _record(self, name: str, *args: Any) -> None:
        self.events.append((name, args))
        self.event(name).set()

    def event(self, name: str) -> asyncio.Event:
        return self.seen.setdefault(name, asyncio.Event())

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.events if n == name]

    def campaign_started(self, election: bytes) -> None:
        self._record("campaign_started", election)

    def elected(self, leadership: geeh.Leadership, waited: float) -> None:
        self._record("elected", leadership, waited)

    def lost(self, leadership: geeh.Leadership, reason: BaseException) -> None:
        self._record("lost", leadership, reason)

    def resigned(self, leadership: geeh.Leadership) -> None:
        self._record("resigned", leadership)

    def keepalive_failed(self, lease: int, error: str) -> None:
        self._record("keepalive_failed", lease, error)

    def member_switched(self, old: str, new: str, reason: str) -> None:
        self._record("member_switched", old, new, reason)

    def watch_resumed(self, endpoint: str, watches: int) -> None:
        self._record("watch_resumed", endpoint, watches)

    def reauthenticated(self) -> None:
        self._record("reauthenticated")


class Raising(geeh.Listener):
    """Raises in every event."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("calls", "__class__", "__dict__"):
            return object.__getattribute__(self, name)

        def boom(*args: Any) -> None:
            self.calls += 1
            raise RuntimeError(f"listener bug in {name}")

        return boom


async def revoke(client: geeh.Client, lease: int) -> None:
    """Revoke ``lease`` as someone else would (an operator, another process)."""
    await client.core.transport.call(LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=lease))


async def test_a_term_is_reported_in_order(etcd: LocalEtcdCluster, name: str) -> None:
    first, second = Recorder(), Recorder()
    async with (
        geeh.Client(etcd.endpoints, listeners=[first]) as a,
        geeh.Client(etcd.endpoints) as b,
    ):
        b.add_listener(second)
        leadership = await within(a.election(name).campaign(b"a", ttl=5), 5, "a elected")
        waiting = asyncio.ensure_future(b.election(name).campaign(b"b", ttl=5))
        await within(second.event("campaign_started").wait(), 5, "b's campaign started")
        assert second.names() == ["campaign_started"]

        async def queued() -> bool:
            return len(await a.election(name).candidates()) == 2

        await eventually(queued, what="b in line")
        await leadership.resign()
        successor = await within(waiting, 5, "b elected")
        assert first.names() == ["campaign_started", "elected", "resigned"]
        assert first.of("campaign_started") == [(name.encode(),)]
        ((won, waited),), ((gone,),) = first.of("elected"), first.of("resigned")
        assert won is leadership and gone is leadership and waited >= 0
        assert second.names() == ["campaign_started", "elected"]
        assert second.of("elected")[0][1] > 0

        # Revoked from outside: lost, with a reason; never "resigned".
        await revoke(a, successor.lease)
        await within(second.event("lost").wait(), 5, "b's loss reported")
        ((lost, reason),) = second.of("lost")
        assert lost is successor and successor.lost.reason is reason
        assert loss_reason(reason) in ("candidate_removed", "session_expired")
        assert "resigned" not in second.names()
        b.remove_listener(second)
        again = await within(b.election(name).campaign(b"b2", ttl=5), 5, "b elected again")
        await again.resign()
        assert second.names() == ["campaign_started", "elected", "lost"]


async def test_a_listener_that_raises_changes_nothing(
    etcd: LocalEtcdCluster, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    raising, recorder = Raising(), Recorder()
    caplog.set_level(logging.ERROR, logger="geeh.events")
    async with geeh.Client(etcd.endpoints, listeners=[raising, recorder]) as client:
        election = client.election(name)
        leadership = await within(election.campaign(b"v", ttl=5), 5, "campaign")
        assert leadership.is_leader
        await leadership.proclaim(b"w")
        leader = await election.leader()
        assert leader is not None and leader.value == b"w"
        await leadership.resign()
        # The others are told all the same, and every failure was logged.
        assert recorder.names() == ["campaign_started", "elected", "resigned"]
        assert raising.calls == 3
        assert len([r for r in caplog.records if "listener bug" in str(r.exc_info)]) == 3
        assert await election.leader() is None


async def test_member_switched(etcd: LocalEtcdCluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    recorder = Recorder()
    async with geeh.Client([dead, *etcd.endpoints], discover=False, listeners=[recorder]):
        ((old, new, reason),) = recorder.of("member_switched")
        assert (old, new) == (dead, etcd.endpoints[0])
        assert "UNAVAILABLE" in reason


async def test_watch_resumed_and_keepalive_failed(etcd: LocalEtcdCluster, name: str) -> None:
    recorder = Recorder()
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        async with (
            geeh.Client(etcd.endpoints) as direct,
            geeh.Client([proxy.endpoint], discover=False, listeners=[recorder]) as client,
        ):
            leadership = await within(direct.election(name).campaign(b"a", ttl=5), 5, "leader")
            waiting = asyncio.ensure_future(client.election(name).campaign(b"b", ttl=5))
            try:
                await eventually(lambda: client.core.watches.active >= 2, what="b's watches")
                proxy.cut()  # reset every connection: the watch stream re-opens
                await within(recorder.event("watch_resumed").wait(), 10, "watch resumed")
                (endpoint, watches), *_ = recorder.of("watch_resumed")
                assert endpoint == proxy.endpoint and watches >= 2
                assert not recorder.of("keepalive_failed")

                proxy.blackhole()  # silent member: the next keepalive goes unanswered
                await within(recorder.event("keepalive_failed").wait(), 10, "keepalive failed")
                proxy.pass_through()
                (lease, error), *_ = recorder.of("keepalive_failed")
                assert error and lease != leadership.lease
                assert not waiting.done()  # a failed keepalive is not a loss
                await leadership.resign()
                won = await within(waiting, 10, "b elected after the faults")
                await won.resign()
            finally:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)


# -- authentication: re-authentication is an event; secrets never reach the logs ---------------


@pytest.fixture(scope="module")
def secured() -> Iterator[LocalEtcdCluster]:
    """A one-member etcd with auth enabled (user root) and 1 s tokens."""
    cluster = LocalEtcdCluster(1, etcd_bin=ETCD_BINARIES["3.5"], extra_args=["--auth-token-ttl=1"])
    cluster.start()
    etcdctl = [find_etcdctl(), f"--endpoints={cluster.endpoints[0]}"]
    try:
        for args in (["user", "add", "root", "--new-user-password=pw-x9q"], ["auth", "enable"]):
            subprocess.run([*etcdctl, *args], check=True, capture_output=True, timeout=10)
        yield cluster
    finally:
        cluster.close()


async def test_reauthenticated_and_no_secret_in_logs(
    secured: LocalEtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="geeh")
    recorder = Recorder()
    tokens: set[str] = set()
    async with geeh.Client(
        secured.endpoints, username="root", password="pw-x9q", listeners=[recorder]
    ) as client:
        assert client.core.transport.token is not None
        tokens.add(client.core.transport.token)
        election = client.election("auth-events")
        leadership = await within(election.campaign(b"v", ttl=5), 5, "campaign")
        assert not recorder.of("reauthenticated")  # the first token is no renewal
        # The token expires after 1 s; a request after that needs a new one.
        await asyncio.sleep(2.5)
        await within(leadership.proclaim(b"later"), 5, "proclaim with an expired token")
        await within(recorder.event("reauthenticated").wait(), 5, "re-authentication")
        assert client.core.transport.token is not None
        tokens.add(client.core.transport.token)
        await leadership.resign()
    assert len(tokens) == 2
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert "elected leader of auth-events" in text  # the log was captured
    for secret in ("pw-x9q", *tokens):
        assert secret not in text

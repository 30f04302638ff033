"""etcd with authentication: campaigns outlive their auth token (etcd #17623, jetcd#1336)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator

import pytest
from conftest import ETCD_BINARIES
from support.wait import eventually, within

import geeh
from geeh.net.retry import AUTHENTICATE
from geeh.testing import LocalEtcdCluster, find_etcdctl


@pytest.fixture(scope="module", params=sorted(ETCD_BINARIES), ids=lambda v: f"etcd{v}")
def secured(request: pytest.FixtureRequest) -> Iterator[LocalEtcdCluster]:
    """A one-member etcd with auth enabled (user root, password "secret") and 1 s tokens."""
    binary = ETCD_BINARIES[request.param]
    cluster = LocalEtcdCluster(1, etcd_bin=binary, extra_args=["--auth-token-ttl=1"])
    cluster.start()
    etcdctl = [find_etcdctl(), f"--endpoints={cluster.endpoints[0]}"]
    try:
        for args in (["user", "add", "root", "--new-user-password=secret"], ["auth", "enable"]):
            subprocess.run([*etcdctl, *args], check=True, capture_output=True, timeout=10)
        yield cluster
    finally:
        cluster.close()


def renewals(client: geeh.Client) -> int:
    auth = client.core.transport.auth
    assert auth is not None
    return auth.renewals


async def token_expired() -> None:
    """Let the client's token expire: etcd drops a simple token 1 s (--auth-token-ttl) after
    its last use, and any check of it would count as a use, so there is nothing to poll."""
    await asyncio.sleep(2.5)


async def test_campaign_outlives_its_auth_token(secured: LocalEtcdCluster) -> None:
    async with geeh.Client(secured.endpoints, username="root", password="secret") as client:
        election = client.election("auth")
        leadership = await within(election.campaign(b"v", ttl=5), 5, "campaign")
        before = renewals(client)
        await token_expired()
        await within(leadership.proclaim(b"later"), 5, "proclaim with an expired token")
        assert renewals(client) == before + 1, "the proclaim did not re-authenticate"
        leader = await election.leader()
        assert leader is not None and leader.value == b"later"
        assert leadership.is_leader
        await leadership.resign()


async def test_concurrent_calls_after_expiry_authenticate_once(
    secured: LocalEtcdCluster,
) -> None:
    """20 calls find the token expired at once: one Authenticate (bcrypt on the server) goes
    out, the others wait for it; none goes out with no token ("user name is empty")."""
    async with geeh.Client(secured.endpoints, username="root", password="secret") as client:
        election = client.election("auth-concurrent")
        before = renewals(client)
        await token_expired()
        results = await within(
            asyncio.gather(*(election.leader() for _ in range(20)), return_exceptions=True),
            10,
            "20 reads with an expired token",
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == [], f"{len(failures)} of 20 calls failed: {failures[:3]}"
        assert renewals(client) == before + 1, "one re-authentication for all 20 calls"


async def test_watch_stream_reauthenticates_in_place(secured: LocalEtcdCluster) -> None:
    """A watch created on a stream whose token expired is refused ("permission denied"): the
    stream re-opens with a fresh token on the same member, instead of leaving the member."""
    credentials = {"username": "root", "password": "secret"}
    async with (
        geeh.Client(secured.endpoints, **credentials) as client,
        geeh.Client(secured.endpoints, **credentials) as other,
    ):
        transport = client.core.transport
        election = client.election("auth-watch")
        async with election.observe() as first:
            assert await within(anext(first), 5, "first observer") is None
            generation = transport.generation
            before = renewals(client)
            await token_expired()
            # A new watch on the open stream (its token is the expired one).
            async with election.observe() as second:
                assert await within(anext(second), 5, "second observer") is None
                leadership = await within(
                    other.election("auth-watch").campaign(b"v", ttl=5), 5, "campaign"
                )
                for changes in (first, second):
                    seen = await within(anext(changes), 5, "the new leader on a watch")
                    assert seen is not None and seen.key == leadership.key
                await leadership.resign()
            assert renewals(client) == before + 1
            assert transport.generation == generation, "the member was left over an auth error"


async def test_wrong_password_is_a_clear_error(secured: LocalEtcdCluster) -> None:
    client = geeh.Client(secured.endpoints, username="root", password="wrong")
    with pytest.raises(geeh.EtcdError, match="authentication failed"):
        await within(client.__aenter__(), 5, "connect")


async def test_no_credentials_is_a_clear_error(secured: LocalEtcdCluster) -> None:
    async with geeh.Client(secured.endpoints) as client:
        with pytest.raises(geeh.EtcdError, match=r"user name is empty|permission denied"):
            await within(client.election("auth").leader(), 5, "leader")


# How long the callers of the combined test stay idle between bursts: more than a token's
# life (1 s after its last use, checked by etcd every second), so each burst finds it expired.
# The pause shapes the load; the test waits on the renewal counter, not on time.
IDLE = 2.2
EXPIRIES = 6


async def test_leader_observer_and_callers_live_through_many_expiries(
    secured: LocalEtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader, a waiting candidate, an observer and five callers bursting at once share one
    client through EXPIRIES token expiries: every call succeeds, exactly one Authenticate goes
    out per expired token, and nothing is sent without a token."""
    async with geeh.Client(secured.endpoints, username="root", password="secret") as client:
        transport = client.core.transport
        before = renewals(client)
        # Every token etcd refused (each one an expiry), as the re-authentications report them.
        refused: set[str] = set()
        authenticate = transport.authenticate

        async def recording(stale: str | None = None) -> None:
            if stale is not None:
                refused.add(stale)
            await authenticate(stale=stale)

        monkeypatch.setattr(transport, "authenticate", recording)
        sent: list[str] = []  # Authenticate requests on the wire
        tokenless: list[str] = []  # anything else sent with no token

        def on_request(endpoint: str, path: str) -> None:
            if path == AUTHENTICATE.path:
                sent.append(path)
            elif transport.token is None:
                tokenless.append(path)

        transport.on_request = on_request

        election = client.election("auth-many")
        leadership = await within(election.campaign(b"0", ttl=5), 5, "campaign")
        waiting = asyncio.ensure_future(election.campaign(b"next", ttl=5))
        seen: list[bytes] = []

        async def observe() -> None:
            async with election.observe() as changes:
                async for leader in changes:
                    seen.append(b"" if leader is None else leader.value)

        async def proclaim_and_see(i: int) -> None:
            """A new watch on a stream whose token expired must still see the proclamation."""
            async with election.observe() as changes:
                await anext(changes)
                await leadership.proclaim(str(i).encode())
                now = await within(anext(changes), 5, "a proclamation on a new watch")
                assert now is not None and now.value == str(i).encode()

        calls = [
            proclaim_and_see,
            lambda i: election.leader(),
            lambda i: election.candidates(ttl=True),
            lambda i: leadership.put("auth-many-data", str(i).encode()),
            lambda i: client.get("auth-many-data"),
        ]
        failures: list[BaseException] = []
        burst = asyncio.Event()

        async def caller(call: Callable[[int], Awaitable[object]]) -> None:
            i = 0
            while True:
                current = burst
                await current.wait()
                i += 1
                try:
                    await call(i)
                except asyncio.CancelledError:
                    raise
                except BaseException as err:  # also pytest's Failed, from within()
                    failures.append(err)

        async def pacer() -> None:
            nonlocal burst
            while True:
                await asyncio.sleep(IDLE)
                current, burst = burst, asyncio.Event()
                current.set()  # every caller at once

        observer = asyncio.ensure_future(observe())
        tasks = [asyncio.ensure_future(pacer())]
        tasks += [asyncio.ensure_future(caller(call)) for call in calls]
        try:
            await eventually(
                lambda: renewals(client) >= before + EXPIRIES or failures,
                timeout=EXPIRIES * IDLE * 4,
                what=f"{EXPIRIES} re-authentications",
            )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert failures == [], f"{len(failures)} calls failed: {failures[:3]}"
            assert tokenless == [], f"sent without a token: {tokenless[:5]}"
            renewed = renewals(client) - before
            assert renewed == len(refused), "one re-authentication per expired token"
            assert len(sent) == renewed, "an Authenticate request for each renewal, no more"
            assert leadership.is_leader and not waiting.done()
            await leadership.proclaim(b"last")
            await eventually(lambda: seen[-1:] == [b"last"], what="the observer's last value")
            await leadership.resign()
            assert (await within(waiting, 5, "hand-off")).is_leader
        finally:
            for task in [*tasks, observer]:
                task.cancel()
            await asyncio.gather(*tasks, observer, return_exceptions=True)

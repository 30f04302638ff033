"""etcd with authentication: campaigns outlive their auth token (etcd #17623, jetcd#1336)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest
from conftest import ETCD_BINARIES
from support.wait import within

import geeh
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

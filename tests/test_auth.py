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


@pytest.fixture(scope="module")
def secured() -> Iterator[LocalEtcdCluster]:
    """A one-member etcd with auth enabled (user root, password "secret") and 1 s tokens."""
    cluster = LocalEtcdCluster(1, etcd_bin=ETCD_BINARIES["3.5"], extra_args=["--auth-token-ttl=1"])
    cluster.start()
    etcdctl = [find_etcdctl(), f"--endpoints={cluster.endpoints[0]}"]
    try:
        for args in (["user", "add", "root", "--new-user-password=secret"], ["auth", "enable"]):
            subprocess.run([*etcdctl, *args], check=True, capture_output=True, timeout=10)
        yield cluster
    finally:
        cluster.close()


async def test_campaign_outlives_its_auth_token(secured: LocalEtcdCluster) -> None:
    async with geeh.Client(secured.endpoints, username="root", password="secret") as client:
        election = client.election("auth")
        leadership = await within(election.campaign(b"v", ttl=5), 5, "campaign")
        # The token expires after 1 s without use; the next request must re-authenticate.
        await asyncio.sleep(2.5)
        await within(leadership.proclaim(b"later"), 5, "proclaim with an expired token")
        leader = await election.leader()
        assert leader is not None and leader.value == b"later"
        assert leadership.is_leader
        await leadership.resign()


async def test_wrong_password_is_a_clear_error(secured: LocalEtcdCluster) -> None:
    client = geeh.Client(secured.endpoints, username="root", password="wrong")
    with pytest.raises(geeh.EtcdError, match="authentication failed"):
        await within(client.__aenter__(), 5, "connect")


async def test_no_credentials_is_a_clear_error(secured: LocalEtcdCluster) -> None:
    async with geeh.Client(secured.endpoints) as client:
        with pytest.raises(geeh.EtcdError, match=r"user name is empty|permission denied"):
            await within(client.election("auth").leader(), 5, "leader")

"""Bad input gets a clear error naming what is wrong: never a hang or a gRPC traceback."""

from __future__ import annotations

import time

import pytest
from support.wait import within

import geeh
from geeh.testing import LocalEtcdCluster, TcpProxy, free_port


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        (42, "endpoints must be a string or a sequence"),
        ("localhost", "not of the form host:port"),
        ("127.0.0.1:99999", r"port 99999 is out of range \(1-65535\)"),
        (["etcd:99999"], r"'etcd:99999': port 99999 is out of range"),
        ("etcd:0", "port 0 is out of range"),
        ("etcd:http", "not of the form host:port"),
        ([], "no etcd endpoint given"),
        ("https://127.0.0.1:2379,http://127.0.0.1:2380", "endpoints mix TLS and plaintext"),
    ],
)
def test_bad_endpoints(endpoints: object, message: str) -> None:
    with pytest.raises(geeh.InvalidArgument, match=message):
        geeh.Client(endpoints)  # type: ignore[arg-type]


def test_bad_timeouts() -> None:
    with pytest.raises(geeh.InvalidArgument, match="dial_timeout must be a positive"):
        geeh.Client("127.0.0.1:2379", dial_timeout=0)


async def test_unreachable_etcd_fails_within_the_dial_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(geeh.EtcdUnavailable, match=r"cannot reach etcd at 127\.0\.0\.1"):
        client = geeh.Client(f"127.0.0.1:{free_port()}", dial_timeout=1)
        await within(client.__aenter__(), 5, "dial")
    assert time.monotonic() - started < 5


async def test_silent_etcd_fails_within_the_dial_timeout(etcd: LocalEtcdCluster) -> None:
    port = int(etcd.endpoints[0].rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        proxy.blackhole()
        with pytest.raises(geeh.EtcdUnavailable, match="within 1s"):
            await within(geeh.Client(proxy.endpoint, dial_timeout=1).__aenter__(), 5, "dial")


async def test_bad_election_arguments(client: geeh.Client, name: str) -> None:
    with pytest.raises(geeh.InvalidArgument, match="election name must not be empty"):
        client.election("")
    with pytest.raises(geeh.InvalidArgument, match="election name must be str or bytes"):
        client.election(7)  # type: ignore[arg-type]
    election = client.election(name)
    with pytest.raises(geeh.InvalidArgument, match="value must be str or bytes, not NoneType"):
        election.campaign(None)  # type: ignore[arg-type]
    with pytest.raises(geeh.InvalidArgument, match=r"ttl must be at least 1 second, got 0\.5"):
        election.campaign(b"v", ttl=0.5)  # type: ignore[arg-type]
    with pytest.raises(geeh.InvalidArgument, match="ttl must be a number of seconds, not str"):
        election.campaign(b"v", ttl="5")  # type: ignore[arg-type]
    with pytest.raises(geeh.InvalidArgument, match="etcd accepts at most"):
        election.campaign(b"x" * (2 * 1024 * 1024))
    with pytest.raises(geeh.InvalidArgument, match="either session or lease"):
        election.campaign(b"v", session=await client.session(5), lease=5)
    with pytest.raises(geeh.InvalidArgument, match="lease must be a positive int"):
        await election.campaign(b"v", lease=-1)


async def test_value_over_the_servers_limit_is_a_clear_error(
    client: geeh.Client, name: str
) -> None:
    """Under our 1.5 MiB check but over the server's limit once the request is framed."""
    leadership = await client.election(name).campaign(b"small", ttl=5)
    with pytest.raises(geeh.EtcdError, match="larger than etcd accepts"):
        await leadership.proclaim(b"x" * (1536 * 1024))
    assert leadership.is_leader, "a rejected proclaim does not cost leadership"
    await leadership.resign()


async def test_closed_client_says_so(etcd: LocalEtcdCluster, name: str) -> None:
    client = geeh.Client(etcd.endpoints)
    await client.close()
    with pytest.raises(geeh.ClosedError, match="closed"):
        client.election(name)

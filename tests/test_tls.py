"""TLS and mutual TLS against real etcd servers (certificates made per run with trustme).

Campaign, observe, hand-off and member failover over TLS on 3 members; client-certificate
(CN) authentication with etcd's auth enabled; re-authentication over TLS; and every bad input
named in one line, within the dial timeout, never a hang.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator

import pytest
from support.wait import within

import geeh
from geeh.net import diagnose
from geeh.testing import CertificateAuthority, EtcdCluster, EtcdFactory, LocalEtcdCluster

DIAL = 1.5


def tls_for(cluster: LocalEtcdCluster, **changes: object) -> geeh.TLS:
    """The cluster's CA and trusted client certificate, with ``changes`` applied."""
    settings: dict[str, object] = {
        "ca": cluster.ca_path,
        "cert": cluster.client_cert_path,
        "key": cluster.client_key_path,
    }
    settings.update(changes)
    return geeh.TLS(**settings)  # type: ignore[arg-type]


def first(cluster: LocalEtcdCluster, member: int) -> list[str]:
    """The cluster's https URLs, ``member``'s first: the one a new client pins."""
    urls = cluster.urls
    return [urls[member], *(u for i, u in enumerate(urls) if i != member)]


async def observed(observation: geeh.Observation, value: bytes) -> geeh.Leader:
    """The next leader the observation reports with ``value``."""
    async for leader in observation:
        if leader is not None and leader.value == value:
            return leader
    raise AssertionError("the observation ended")


def read(path: str | None) -> bytes:
    with open(path or "", "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")  # shared: no test faults it
def mutual(module_etcd_factory: EtcdFactory) -> LocalEtcdCluster:
    return module_etcd_factory(tls=True, client_cert_auth=True, client_cn="alice")


# -- it works -----------------------------------------------------------------------------


async def test_campaign_observe_handoff_and_failover_over_tls(
    etcd_factory: EtcdFactory, name: str
) -> None:
    cluster = etcd_factory(members=3, tls=True, client_cert_auth=True)
    tls = tls_for(cluster)
    async with (
        geeh.Client(first(cluster, 0), tls=tls) as a,
        geeh.Client(first(cluster, 0), tls=tls) as b,
        geeh.Client(first(cluster, 0), tls=tls) as watcher,
    ):
        assert a.core.transport.endpoint == cluster.member_endpoint(0)
        async with watcher.election(name).observe() as observation:
            leadership = await within(a.election(name).campaign(b"a", ttl=5), 10, "a wins")
            await within(observed(observation, b"a"), 10, "a observed")
            b_campaign = asyncio.ensure_future(b.election(name).campaign(b"b", ttl=5))

            cluster.kill(0)  # every client was on member 0: all move to another member
            await leadership.proclaim(b"a-after-failover")
            assert a.core.transport.endpoint != cluster.member_endpoint(0)
            seen = await within(observed(observation, b"a-after-failover"), 10, "proclaimed")
            assert seen.token == leadership.token
            assert not b_campaign.done()

            await leadership.resign()
            b_leadership = await within(b_campaign, 10, "b takes over")
            seen = await within(observed(observation, b"b"), 10, "b observed")
            assert seen.token == b_leadership.token
            await b_leadership.resign()


async def test_https_endpoints_alone_verify_against_the_given_ca(
    mutual: LocalEtcdCluster, name: str
) -> None:
    """PEM bytes instead of paths; the https scheme needs no other switch."""
    settings = geeh.TLS(
        ca=read(mutual.ca_path), cert=read(mutual.client_cert_path), key=mutual.client_key_path
    )
    async with geeh.Client(mutual.urls, tls=settings) as client:
        leadership = await client.election(name).campaign(b"v", ttl=5)
        assert (await client.election(name).leader()).token == leadership.token  # type: ignore[union-attr]
        await leadership.resign()


async def test_discovery_over_tls_learns_the_members_https_urls(
    etcd_factory: EtcdFactory,
) -> None:
    cluster = etcd_factory(members=3, tls=True)
    async with geeh.Client(cluster.urls[0], tls=geeh.TLS(ca=cluster.ca_path)) as plain:
        assert plain.core.transport.endpoints == [cluster.member_endpoint(0)]
    async with geeh.Client(
        cluster.urls[0], tls=geeh.TLS(ca=cluster.ca_path), discover=True
    ) as discovering:
        assert sorted(discovering.core.transport.endpoints) == sorted(cluster.endpoints)


async def test_the_certificates_cn_is_the_user_when_auth_is_enabled(
    mutual: LocalEtcdCluster, name: str
) -> None:
    """alice has a role on NAME/ only and no password: her certificate is her identity."""
    root = ("--user", "root:rootpw")
    mutual.etcdctl("user", "add", "root", "--new-user-password=rootpw")
    mutual.etcdctl("role", "add", "elections")
    mutual.etcdctl(
        "role", "grant-permission", "--prefix=true", "elections", "readwrite", f"{name}/"
    )
    mutual.etcdctl("user", "add", "alice", "--new-user-password=unused")
    mutual.etcdctl("user", "grant-role", "alice", "elections")
    mutual.etcdctl("auth", "enable")
    try:
        async with geeh.Client(mutual.urls, tls=tls_for(mutual)) as alice:
            leadership = await alice.election(name).campaign(b"alice", ttl=5)
            assert (await alice.election(name).leader()).value == b"alice"  # type: ignore[union-attr]
            with pytest.raises(geeh.EtcdError, match="permission denied"):
                await alice.put("outside-the-prefix", "x")
            await leadership.resign()
    finally:
        mutual.etcdctl(*root, "auth", "disable")


async def test_reauthentication_over_tls(etcd_factory: EtcdFactory, name: str) -> None:
    """Password auth with 1 s tokens over TLS: the leader keeps its leadership through
    several renewals, and its fenced writes keep landing."""
    cluster = etcd_factory(tls=True, extra_args=["--auth-token-ttl=1"])
    cluster.etcdctl("user", "add", "root", "--new-user-password=rootpw")
    cluster.etcdctl("auth", "enable")
    async with geeh.Client(
        cluster.urls, tls=geeh.TLS(ca=cluster.ca_path), username="root", password="rootpw"
    ) as client:
        auth = client.core.transport.auth
        assert auth is not None
        leadership = await client.election(name).campaign(b"v", ttl=5)
        start = auth.renewals
        for _ in range(3):
            # A simple token expires 1 s after its last use: nothing to poll without using it.
            await asyncio.sleep(2.5)
            await leadership.put(f"{name}-state", "x")
        assert auth.renewals >= start + 3
        assert leadership.is_leader
        await leadership.resign()


# -- what goes wrong is named ----------------------------------------------------------


async def unavailable_because(endpoints: list[str], tls: geeh.TLS | None) -> str:
    client = geeh.Client(endpoints, tls=tls, dial_timeout=DIAL)
    with pytest.raises(geeh.EtcdUnavailable) as caught:
        await within(client.connect(), DIAL + 10, "a bounded dial")
    await client.close()
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_plaintext_against_tls_and_tls_against_plaintext(
    mutual: LocalEtcdCluster, etcd: EtcdCluster
) -> None:
    message = await unavailable_because(mutual.endpoints, None)
    assert "serves TLS and this client speaks plaintext: use https://" in message
    message = await unavailable_because(etcd.endpoints, tls_for(mutual))
    assert "does not serve TLS" in message


async def test_certificate_problems_are_named(mutual: LocalEtcdCluster, tmp_path: str) -> None:
    other_ca = CertificateAuthority(str(tmp_path), "other")
    untrusted = mutual.issue_client_cert("alice", trusted=False)
    expired = mutual.issue_client_cert("alice", expired=True)
    cases = [
        (tls_for(mutual, ca=other_ca.ca_path), "is not signed by the CA given (--cacert)"),
        (tls_for(mutual, ca=None), "is not signed by a CA this system trusts"),
        (tls_for(mutual, server_name="etcd.example"), "is not valid for 'etcd.example'"),
        (tls_for(mutual, cert=None, key=None), "requires a client certificate"),
        (
            tls_for(mutual, cert=untrusted.cert_path, key=untrusted.key_path),
            "refused the client certificate: it is not signed by a CA etcd trusts",
        ),
        (
            tls_for(mutual, cert=expired.cert_path, key=expired.key_path),
            "refused the client certificate: it has expired",
        ),
    ]
    for tls, expected in cases:
        assert expected in await unavailable_because(mutual.endpoints, tls), tls


async def test_a_tls_mistake_is_reported_at_the_first_conclusive_handshake(
    mutual: LocalEtcdCluster, etcd: EtcdCluster
) -> None:
    """Waiting cannot fix a TLS mistake: with a dial timeout of an hour, the connect still
    fails, named, once every endpoint's handshake has failed (not at the timeout)."""
    cases = [
        (mutual.endpoints, None, "serves TLS and this client speaks plaintext"),
        (mutual.urls, tls_for(mutual, cert=None, key=None), "requires a client certificate"),
        (etcd.endpoints, tls_for(mutual), "does not serve TLS"),
    ]
    for endpoints, tls, expected in cases:
        client = geeh.Client(endpoints, tls=tls, dial_timeout=3600)
        with pytest.raises(geeh.EtcdUnavailable) as caught:
            await within(client.connect(), 60, f"the dial to stop early: {expected}")
        await client.close()
        message = str(caught.value)
        assert expected in message and "within" not in message, message


async def test_one_endpoint_with_a_tls_mistake_does_not_stop_the_dial(
    mutual: LocalEtcdCluster, etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not conclusive while another endpoint may answer: the dial goes on, and connects."""
    monkeypatch.setattr(diagnose, "PROBE_AFTER", 0)  # probe every dial, however quick
    async with geeh.Client([*etcd.endpoints, mutual.urls[0]], tls=tls_for(mutual)) as client:
        assert await client.election("x").leader() is None


@pytest.fixture
def expired_server(etcd_bin: str | None) -> Iterator[LocalEtcdCluster]:
    """A member that presents a certificate which expired yesterday."""
    cluster = LocalEtcdCluster(1, etcd_bin=etcd_bin, tls=True)
    assert cluster.tls is not None
    stale = cluster.tls.authority.issue_server_cert(expired=True)
    shutil.copyfile(stale.cert_path, cluster.tls.server.cert_path)
    shutil.copyfile(stale.key_path, cluster.tls.server.key_path)
    with cluster:
        yield cluster


async def test_an_expired_server_certificate_is_named(expired_server: LocalEtcdCluster) -> None:
    message = await unavailable_because(expired_server.urls, geeh.TLS(ca=expired_server.ca_path))
    assert "has expired" in message


def test_bad_settings_are_refused_when_the_client_is_made(
    mutual: LocalEtcdCluster, tmp_path: str
) -> None:
    other = mutual.issue_client_cert("bob", trusted=False)
    text = os.path.join(tmp_path, "notes.txt")
    with open(text, "w") as fh:
        fh.write("not a certificate\n")
    cases: list[tuple[dict[str, object], str]] = [
        (
            {"tls": tls_for(mutual, ca="/no/such/ca.pem")},
            "TLS ca file '/no/such/ca.pem' does not exist",
        ),
        ({"tls": tls_for(mutual, ca=text)}, "is not in PEM form"),
        ({"tls": tls_for(mutual, key=None)}, "needs both cert and key (key missing)"),
        ({"tls": tls_for(mutual, key=other.key_path)}, "does not match the certificate"),
        ({"tls": tls_for(mutual, server_name="")}, "server_name must be a host name"),
        ({"tls": "yes"}, "tls must be a geeh.TLS"),
        ({"endpoints": ["http://h:1"], "tls": tls_for(mutual)}, "use https://"),
        ({"endpoints": ["https://h:1", "http://h:2"]}, "endpoints mix TLS and plaintext"),
        ({"endpoints": ["ftp://h:1"]}, "the scheme must be http or https"),
    ]
    for options, expected in cases:
        endpoints = options.pop("endpoints", mutual.endpoints)
        with pytest.raises(geeh.InvalidArgument) as caught:
            geeh.Client(endpoints, **options)  # type: ignore[arg-type]
        assert expected in str(caught.value)


async def test_tls_repr_shows_paths_never_pem_contents(mutual: LocalEtcdCluster) -> None:
    settings = geeh.TLS(
        ca=mutual.ca_path, cert=mutual.client_cert_path, key=read(mutual.client_key_path)
    )
    assert "PRIVATE KEY" not in repr(settings) and "<PEM bytes>" in repr(settings)
    client = geeh.Client(mutual.endpoints, tls=settings)
    assert "PRIVATE KEY" not in repr(client) + repr(client.core.transport.tls)
    await client.close()

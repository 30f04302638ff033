"""TLS clusters from geeh.testing: certificates made per run, checked with etcd's own etcdctl."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from geeh.testing import EtcdFactory, LocalEtcdCluster, find_etcdctl


def etcdctl(
    cluster: LocalEtcdCluster,
    *args: str,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    refused: bool = False,
) -> subprocess.CompletedProcess[str]:
    """etcdctl against the cluster with exactly the TLS flags given. ``refused``: the
    handshake is expected to fail, which etcdctl retries until its command timeout; a short
    one then, and the test checks the handshake's error instead."""
    timeout = "3s" if refused else "10s"
    flags = [
        f"--endpoints={','.join(cluster.urls)}",
        "--dial-timeout=3s",
        f"--command-timeout={timeout}",
    ]
    for flag, path in (("--cacert", ca), ("--cert", cert), ("--key", key)):
        if path is not None:
            flags.append(f"{flag}={path}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    return subprocess.run(
        [find_etcdctl(), *flags, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def common_name(cert_path: str) -> str:
    with open(cert_path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture(scope="module")  # shared: no test faults it
def secure(module_etcd_factory: EtcdFactory) -> LocalEtcdCluster:
    return module_etcd_factory(tls=True, client_cert_auth=True, client_cn="alice")


def test_etcdctl_with_the_cluster_certificates_is_served(secure: LocalEtcdCluster) -> None:
    assert all(url.startswith("https://127.0.0.1:") for url in secure.urls)
    assert secure.ca_path and secure.client_cert_path and secure.client_key_path
    assert common_name(secure.client_cert_path) == "alice"
    health = etcdctl(
        secure,
        "endpoint",
        "health",
        ca=secure.ca_path,
        cert=secure.client_cert_path,
        key=secure.client_key_path,
    )
    assert health.returncode == 0, health.stderr
    assert "is healthy" in health.stdout + health.stderr
    # The cluster's own requests (JSON gateway) speak TLS with the same certificates.
    secure.etcdctl("put", "k", "v")
    assert secure.compact() > 0
    with pytest.raises(LookupError):
        secure.expire(0x1234)


def test_a_client_without_a_trusted_certificate_is_refused(secure: LocalEtcdCluster) -> None:
    assert secure.ca_path is not None
    refused = etcdctl(secure, "endpoint", "health", ca=secure.ca_path, refused=True)
    assert refused.returncode != 0 and "bad certificate" in refused.stderr, refused.stderr
    for bad in (
        secure.issue_client_cert("mallory", trusted=False),  # another CA
        secure.issue_client_cert("alice", expired=True),
    ):
        out = etcdctl(
            secure,
            *("put", "k", "v"),
            ca=secure.ca_path,
            cert=bad.cert_path,
            key=bad.key_path,
            refused=True,
        )
        assert out.returncode != 0 and "bad certificate" in out.stderr, (bad, out.stderr)
    bob = secure.issue_client_cert("bob")
    assert common_name(bob.cert_path) == "bob"
    accepted = etcdctl(
        secure, "put", "k", "v", ca=secure.ca_path, cert=bob.cert_path, key=bob.key_path
    )
    assert accepted.returncode == 0, accepted.stderr
    # A key that does not match its certificate fails on the client side already.
    assert secure.client_key_path is not None
    mixed = etcdctl(
        secure, "put", "k", "v", ca=secure.ca_path, cert=bob.cert_path, key=secure.client_key_path
    )
    assert mixed.returncode != 0 and "private key does not match" in mixed.stderr


def test_a_certificate_for_another_host_name_fails_verification(
    etcd_factory: EtcdFactory,
) -> None:
    cluster = etcd_factory(tls=True, server_names=["etcd.invalid"])
    assert cluster.ca_path is not None
    out = etcdctl(cluster, "endpoint", "health", ca=cluster.ca_path, refused=True)
    assert out.returncode != 0
    assert re.search(
        r"x509: (cannot validate certificate for 127|certificate is valid for)", out.stderr
    )
    assert cluster.compact() > 0  # the cluster's own requests still reach it


def test_tls_without_client_certificates(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(tls=True)
    assert cluster.ca_path is not None
    out = etcdctl(cluster, "endpoint", "health", ca=cluster.ca_path)
    assert out.returncode == 0, out.stderr
    untrusted = etcdctl(cluster, "endpoint", "health", refused=True)  # an unknown CA
    assert untrusted.returncode != 0 and "x509" in untrusted.stderr, untrusted.stderr


def test_three_members_behind_proxies_over_tls(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(members=3, tls=True, client_cert_auth=True)
    out = cluster.etcdctl("endpoint", "health", "--cluster")
    assert out.stdout.count("is healthy") + out.stderr.count("is healthy") == 3
    cluster.blackhole(2)
    cluster.heal()


def test_tls_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="client_cert_auth needs tls=True"):
        LocalEtcdCluster(client_cert_auth=True)
    plain = LocalEtcdCluster()
    try:
        assert plain.ca_path is None and plain.client_cert_path is None
        with pytest.raises(RuntimeError, match="TLS cluster"):
            plain.issue_client_cert("x")
    finally:
        plain.close()

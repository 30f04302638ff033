"""Throw-away certificates for TLS test clusters, made with trustme (the testing extra).

trustme is imported only when a certificate authority is made, so that importing
geeh.testing (and loading its pytest plugin) stays cheap.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CertFiles", "CertificateAuthority", "ClusterTls"]

#: Host names a local member's server certificate is valid for.
LOCAL_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key, as PEM files.

    Pair the certificate of one with the key of another to get a key that does not
    match its certificate.
    """

    cert_path: str
    key_path: str


def _write(path: str, data: bytes, *, private: bool = False) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


class CertificateAuthority:
    """A certificate authority made for one run; writes its PEM files into *directory*.

    Args:
        directory: where the files go (created if needed).
        name: prefix of the file names; ``<name>.pem`` is the CA certificate.
    """

    def __init__(self, directory: str, name: str = "ca") -> None:
        try:
            import trustme
        except ImportError:
            raise RuntimeError(
                'TLS test certificates need trustme: pip install "gee-h[testing]"'
            ) from None
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.name = name
        self._ca: Any = trustme.CA()
        self._issued = 0
        #: The CA certificate (PEM): what a client or server trusts.
        self.ca_path = _write(os.path.join(directory, f"{name}.pem"), self._ca.cert_pem.bytes())

    def issue(
        self,
        hostnames: Sequence[str],
        *,
        common_name: str | None = None,
        expired: bool = False,
        label: str | None = None,
    ) -> CertFiles:
        """Issue a certificate valid for *hostnames* (IP addresses or DNS names).

        Args:
            common_name: the subject's CN (etcd takes a client certificate's CN as its
                user name when auth is enabled).
            expired: make one that expired yesterday.
            label: part of the file names.
        """
        if not hostnames:
            raise ValueError("a certificate needs at least one host name")
        validity: dict[str, datetime.datetime] = {}
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            validity = {
                "not_before": now - datetime.timedelta(days=2),
                "not_after": now - datetime.timedelta(days=1),
            }
        leaf = self._ca.issue_cert(*hostnames, common_name=common_name, **validity)
        self._issued += 1
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label or "cert")
        stem = os.path.join(self.directory, f"{self.name}-{self._issued}-{safe}")
        return CertFiles(
            cert_path=_write(stem + ".crt", b"".join(b.bytes() for b in leaf.cert_chain_pems)),
            key_path=_write(stem + ".key", leaf.private_key_pem.bytes(), private=True),
        )

    def issue_client_cert(
        self, common_name: str, *, expired: bool = False, hostnames: Sequence[str] = ("localhost",)
    ) -> CertFiles:
        """A client certificate with CN *common_name* (etcd's user name under auth)."""
        return self.issue(hostnames, common_name=common_name, expired=expired, label=common_name)

    def issue_server_cert(
        self, hostnames: Sequence[str] = LOCAL_NAMES, *, expired: bool = False
    ) -> CertFiles:
        """A server certificate for *hostnames* (by default 127.0.0.1 and localhost)."""
        return self.issue(hostnames, common_name=hostnames[0], expired=expired)


class ClusterTls:
    """The certificates of a TLS cluster: a CA, the members' server certificate and a
    client certificate, all made anew for each cluster.

    Args:
        directory: where the PEM files go.
        server_names: the host names the server certificate is valid for; give names
            other than 127.0.0.1 to have clients fail host name verification.
        client_cn: the CN of :attr:`client`.
    """

    def __init__(
        self, directory: str, *, server_names: Sequence[str] = LOCAL_NAMES, client_cn: str
    ) -> None:
        self.directory = directory
        #: The cluster's CA: it signs the server certificate and trusted client ones.
        self.authority = CertificateAuthority(directory, "ca")
        #: The certificate the members present.
        self.server = self.authority.issue_server_cert(tuple(server_names))
        #: A client certificate the cluster trusts, with CN ``client_cn``.
        self.client = self.authority.issue_client_cert(client_cn)
        self._untrusted: CertificateAuthority | None = None

    @property
    def ca_path(self) -> str:
        """The CA certificate clients must trust (PEM)."""
        return self.authority.ca_path

    def issue_client_cert(
        self, common_name: str, *, expired: bool = False, trusted: bool = True
    ) -> CertFiles:
        """A further client certificate: another CN, an expired one, or (``trusted=False``)
        one signed by a CA the cluster does not trust."""
        if trusted:
            return self.authority.issue_client_cert(common_name, expired=expired)
        if self._untrusted is None:
            self._untrusted = CertificateAuthority(self.directory, "untrusted-ca")
        return self._untrusted.issue_client_cert(common_name, expired=expired)

    def ssl_context(self) -> ssl.SSLContext:
        """A client-side context trusting the CA and presenting :attr:`client`."""
        context = ssl.create_default_context(cafile=self.ca_path)
        context.load_cert_chain(self.client.cert_path, self.client.key_path)
        return context

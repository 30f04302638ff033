"""TLS: the CA to trust, the client certificate to present, the name to expect.

Named as etcdctl names them (``--cacert``, ``--cert``, ``--key``). Each is a path or the PEM
bytes themselves. Everything is read and checked when the client is made, so a missing file,
a file that is not PEM or a key that does not match its certificate is an
:class:`~geeh.InvalidArgument` at once, not a handshake that fails later for reasons gRPC
reports as "unavailable". What only the server can judge (a CA that does not sign its
certificate, an expired certificate, another host name) is explained by :mod:`.diagnose`
when connecting fails.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ..errors import InvalidArgument

PemSource = str | bytes | os.PathLike[str]


@dataclass(frozen=True, repr=False)
class TLS:
    """TLS settings for a :class:`geeh.Client`, named after etcdctl's flags.

    ``ca`` is the CA bundle that signed the members' certificates (``--cacert``); None trusts
    the system's CAs. ``cert`` and ``key`` are the client certificate and its private key
    (``--cert``, ``--key``), for clusters started with ``--client-cert-auth``; with etcd's
    auth enabled, the certificate's CN is the user name. Each of the three is a path (str or
    path-like) or the PEM contents as bytes.

    ``server_name`` is the host name to verify the members' certificates against, when they
    are reached through an address that is not on the certificate (a port-forward, a load
    balancer).

    ::

        tls = geeh.TLS(ca="ca.pem", cert="client.pem", key="client-key.pem")
        async with geeh.Client("https://10.0.0.1:2379", tls=tls) as client:
            ...
    """

    ca: PemSource | None = None
    cert: PemSource | None = None
    key: PemSource | None = None
    server_name: str | None = None

    def load(self) -> LoadedTLS:
        """Read and check every file; InvalidArgument names the first that is wrong."""
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise InvalidArgument(
                f"TLS: a client certificate needs both cert and key ({missing} missing)"
            )
        if self.server_name is not None and (
            not isinstance(self.server_name, str) or not self.server_name.strip()
        ):
            raise InvalidArgument(f"TLS: server_name must be a host name, got {self.server_name!r}")
        ca = _read("ca", self.ca)
        cert = _read("cert", self.cert)
        key = _read("key", self.key)
        if ca is not None:
            _check_ca(ca, _name(self.ca))
        if cert is not None and key is not None:
            _check_pair(cert, key, _name(self.cert), _name(self.key))
        return LoadedTLS(ca=ca, cert=cert, key=key, server_name=self.server_name)

    def __repr__(self) -> str:
        # Paths are shown; PEM contents (a private key among them) never are.
        parts = [f"{field}={_name(getattr(self, field))}" for field in ("ca", "cert", "key")]
        parts.append(f"server_name={self.server_name!r}")
        return f"TLS({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class LoadedTLS:
    """TLS settings read into memory: what the transport makes its channels with."""

    ca: bytes | None
    cert: bytes | None
    key: bytes | None
    server_name: str | None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.server_name is None:
            return []
        # Verify against this name (and send it as SNI) instead of the address dialled.
        return [("grpc.ssl_target_name_override", self.server_name)]

    def ssl_context(self) -> ssl.SSLContext:
        """The same trust as the channels', for diagnosing a failed handshake."""
        context = ssl.create_default_context(
            cadata=self.ca.decode("ascii", "replace") if self.ca is not None else None
        )
        if self.cert is not None and self.key is not None:
            with pem_files(self.cert, self.key) as (cert_path, key_path):
                context.load_cert_chain(cert_path, key_path)
        context.set_alpn_protocols(["h2"])
        return context

    def __repr__(self) -> str:
        return f"<LoadedTLS ca={self.ca is not None} cert={self.cert is not None}>"


def _name(source: PemSource | None) -> str:
    if source is None:
        return "None"
    if isinstance(source, bytes):
        return "<PEM bytes>"
    return repr(os.fspath(source))


def _read(what: str, source: PemSource | None) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise InvalidArgument(f"TLS {what} file {path!r} does not exist") from None
        except OSError as err:
            raise InvalidArgument(f"TLS {what} file {path!r}: {err.strerror}") from None
    else:
        raise InvalidArgument(
            f"TLS {what} must be a path or PEM bytes, not {type(source).__name__}"
        )
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"TLS {what} {_name(source)} is not in PEM form")
    return data


def _check_ca(ca: bytes, name: str) -> None:
    try:
        ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise InvalidArgument(f"TLS ca {name} holds no CA certificate") from None


def _check_pair(cert: bytes, key: bytes, cert_name: str, key_name: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        with pem_files(cert, key) as (cert_path, key_path):
            context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err) or "key values mismatch" in str(err):
            raise InvalidArgument(
                f"TLS key {key_name} does not match the certificate {cert_name}"
            ) from None
        raise InvalidArgument(
            f"TLS cert {cert_name} or key {key_name} cannot be used: {err.reason or err}"
        ) from None


@contextlib.contextmanager
def pem_files(*contents: bytes) -> Iterator[list[str]]:
    """The ssl module loads certificates and keys from files only: private temporary ones."""
    with tempfile.TemporaryDirectory(prefix="geeh-tls-") as directory:
        paths = []
        for index, data in enumerate(contents):
            path = os.path.join(directory, f"{index}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            paths.append(path)
        yield paths

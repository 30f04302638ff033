"""Why a member cannot be reached: a TLS probe for the message a failed dial gives.

gRPC reports every failed handshake as "unavailable", the same as a member that is down. When
connecting fails, one plain socket per endpoint repeats the handshake with the ssl module and
the same trust, and says what to fix: a plaintext client at a TLS port and the reverse, a CA
that did not sign the server's certificate, a certificate for another host name, an expired
one, or a client certificate that etcd refused or requires. The probe only explains: what
decides trust is gRPC's own handshake.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable
from typing import Any

from ..errors import EtcdUnavailable
from .tls import LoadedTLS, pem_files

# An HTTP/2 client preface and an empty SETTINGS frame: the server answers with its own
# SETTINGS, or (TLS 1.3) with the alert that refuses our certificate.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

# OpenSSL's verify codes (X509_V_ERR_*).
_EXPIRED = 10
_HOSTNAME_MISMATCH = (62, 64)  # host name, IP address


# How long a dial may take before the probe starts: a healthy one is done by then, and is
# never probed. Only when to look, not a verdict: the verdict is the handshake's own.
PROBE_AFTER = 0.2
PROBED = 3  # endpoints probed at most


class Unreachable(Exception):
    """The dial failed: ``reason`` says why when the probe could tell; ``early`` if it
    stopped before the dial timeout because every endpoint's handshake failed."""

    def __init__(self, reason: str | None, code: str | None, *, early: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.early = early


async def dial(
    connect: Awaitable[object], endpoints: list[str], tls: LoadedTLS | None, timeout: float
) -> None:
    """Await ``connect``; on its failure (EtcdUnavailable) raise Unreachable with the reason.

    A TLS mistake never heals by waiting: once every endpoint's handshake has failed for a
    reason the probe names, the dial is stopped there instead of running to its timeout.
    One endpoint that answers, or a probe that cannot tell, lets the dial go on.
    """
    task = asyncio.ensure_future(connect)
    probes: list[asyncio.Task[str | None]] = []
    try:
        await asyncio.wait({task}, timeout=PROBE_AFTER)
        if not task.done():
            probes = [
                asyncio.ensure_future(asyncio.to_thread(probe, endpoint, tls, timeout))
                for endpoint in endpoints[:PROBED]
            ]
            pending: set[asyncio.Future[Any]] = set(probes)
            while pending and not task.done():
                _, pending = await asyncio.wait({task, *pending}, return_when=FIRST_COMPLETED)
                pending.discard(task)
                found = [_verdict(p) for p in probes]
                if len(endpoints) <= PROBED and all(found):
                    raise Unreachable(found[0], "UNAVAILABLE", early=True)
        try:
            await task
        except EtcdUnavailable as err:
            reason = next((r for r in map(_verdict, probes) if r), None)
            if reason is None and not probes:
                reason = await explain(endpoints, tls, timeout)
            raise Unreachable(reason, err.code) from None
    finally:
        for item in (task, *probes):
            item.cancel()  # a probe's thread ends by itself, within its timeout
        await asyncio.wait({task})


def _verdict(probed: asyncio.Task[str | None]) -> str | None:
    """A finished probe's reason; None while it runs, or if it could not tell (or failed)."""
    if not probed.done() or probed.cancelled() or probed.exception() is not None:
        return None
    return probed.result()


async def explain(endpoints: list[str], tls: LoadedTLS | None, timeout: float) -> str | None:
    """The first problem found with the endpoints' TLS, as a sentence; None if none is."""
    for endpoint in endpoints[:3]:
        reason = await asyncio.to_thread(probe, endpoint, tls, timeout)
        if reason is not None:
            return reason
    return None


def probe(endpoint: str, tls: LoadedTLS | None, timeout: float) -> str | None:
    """One handshake with ``endpoint`` as the client's channels would make it."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return None  # nothing listening: "is it running?" says it already
    with sock:
        if tls is None:
            return _plain_at_tls_port(sock, endpoint)
        return _tls_problem(sock, endpoint, host, tls)


def _plain_at_tls_port(sock: socket.socket, endpoint: str) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock) as tls_sock:
            tls_sock.getpeercert()
    except ssl.SSLError as err:
        if "ALERT" not in str(err).upper():
            return None  # it does not speak TLS either: something else is wrong
    except OSError:
        return None
    return (
        f"{endpoint} serves TLS and this client speaks plaintext: use https://{endpoint} "
        "and trust its CA (--cacert, or geeh.TLS(ca=...))"
    )


def _tls_problem(sock: socket.socket, endpoint: str, host: str, tls: LoadedTLS) -> str | None:
    name = tls.server_name or host
    try:
        context = tls.ssl_context()
        with context.wrap_socket(sock, server_hostname=name) as tls_sock:
            tls_sock.sendall(_H2_PREFACE)
            if not tls_sock.recv(9):
                return None
    except ssl.SSLCertVerificationError as err:
        return _server_certificate(err, endpoint, name, tls)
    except ssl.SSLError as err:
        return _handshake(str(err).upper(), endpoint, tls)
    except ConnectionResetError:
        # Closed with our ClientHello still unread: the kernel resets rather than ends it.
        return _handshake("UNEXPECTED_EOF", endpoint, tls)
    except OSError:
        return None
    return None


def _server_certificate(
    err: ssl.SSLCertVerificationError, endpoint: str, name: str, tls: LoadedTLS
) -> str:
    if err.verify_code == _EXPIRED:
        return f"the certificate of {endpoint} has expired (or is not valid yet)"
    if err.verify_code in _HOSTNAME_MISMATCH:
        return (
            f"the certificate of {endpoint} is not valid for {name!r}: connect by a name it "
            "is issued for, or give that name as the server name (--server-name, "
            "geeh.TLS(server_name=...))"
        )
    if tls.ca is None:
        return (
            f"the certificate of {endpoint} is not signed by a CA this system trusts: "
            "give its CA (--cacert, geeh.TLS(ca=...))"
        )
    return (
        f"the certificate of {endpoint} is not signed by the CA given (--cacert): "
        f"{err.verify_message}"
    )


def _handshake(text: str, endpoint: str, tls: LoadedTLS) -> str | None:
    # A plaintext etcd closes the connection at the ClientHello; other servers answer it
    # with something that is not a TLS record.
    if any(sign in text for sign in ("UNEXPECTED_EOF", "WRONG_VERSION", "RECORD_LAYER")):
        return (
            f"{endpoint} does not serve TLS: use http://{endpoint} without TLS settings, "
            "or check the port"
        )
    if tls.cert is None and (
        "CERTIFICATE_REQUIRED" in text or "HANDSHAKE_FAILURE" in text or "BAD_CERTIFICATE" in text
    ):
        return (
            f"{endpoint} requires a client certificate (etcd --client-cert-auth): "
            "give one with its key (--cert and --key, geeh.TLS(cert=..., key=...))"
        )
    if tls.cert is not None and ("CERTIFICATE" in text or "UNKNOWN_CA" in text):
        if _expired(tls.cert):
            return f"{endpoint} refused the client certificate: it has expired"
        return (
            f"{endpoint} refused the client certificate: it is not signed by a CA etcd "
            "trusts (etcd --trusted-ca-file), or not valid for client authentication"
        )
    return None


def _expired(cert: bytes) -> bool:
    """Whether our own certificate's validity has passed (False when it cannot be told)."""
    # The ssl module reads a certificate's dates only through this test helper; it is used
    # for nothing but the wording of the message, so its absence costs only that.
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return False
    with pem_files(cert) as (path,):
        try:
            not_after = decode(path)["notAfter"]
        except (ssl.SSLError, KeyError, ValueError):
            return False
    expires = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), datetime.UTC)
    return expires < datetime.datetime.now(datetime.UTC)

"""What every etcd a test gets offers, local or not: endpoints, TLS files, ``compact()``,
``expire(lease)`` and ``etcdctl``. Fault injection needs a local cluster."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import time
from collections.abc import Iterable
from typing import Any, NoReturn, SupportsIndex

from .binaries import find_etcdctl
from .probes import EtcdRequestError, gateway
from .tls import CertFiles, ClusterTls

__all__ = ["EtcdCluster", "FaultUnavailable"]

# gRPC's NOT_FOUND status code, which etcd uses for "requested lease not found".
_NOT_FOUND = 5
_REQUEST_TIMEOUT = 5.0


class FaultUnavailable(RuntimeError):
    """A fault was asked of an etcd this process does not run (``--etcd-endpoints``)."""


def _lease_id(lease: SupportsIndex | Any) -> int:
    """An int lease ID, or the ``lease`` attribute of a Leadership, Session or Leader."""
    value = getattr(lease, "lease", lease)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TypeError(f"expire() needs a lease ID, not {type(lease).__name__}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The end of the range of keys that start with *prefix* (etcd's convention)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\x00"  # every key


class EtcdCluster:
    """An etcd cluster the tests talk to.

    :class:`~geeh.testing.LocalEtcdCluster` runs its members in this process and can
    inject faults; :class:`~geeh.testing.ExternalEtcd` is one the tests were pointed at,
    and its fault methods raise :class:`FaultUnavailable`.
    """

    #: The certificates of a TLS cluster, None for plain HTTP.
    tls: ClusterTls | None = None

    @property
    def endpoints(self) -> list[str]:
        """Endpoints as ``"HOST:PORT"``, for ``geeh.Client(cluster.endpoints)``."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        """Number of members (endpoints)."""
        return len(self.endpoints)

    def __len__(self) -> int:
        return self.size

    @property
    def urls(self) -> list[str]:
        """The endpoints as URLs: ``https://HOST:PORT`` for a TLS cluster."""
        scheme = "https" if self.tls is not None else "http"
        return [f"{scheme}://{e}" for e in self.endpoints]

    # -- TLS ----------------------------------------------------------------------

    @property
    def ca_path(self) -> str | None:
        """The CA certificate (PEM) that signed the members' certificate; None without TLS."""
        return None if self.tls is None else self.tls.ca_path

    @property
    def client_cert_path(self) -> str | None:
        """A client certificate the cluster trusts (PEM); None without TLS."""
        return None if self.tls is None else self.tls.client.cert_path

    @property
    def client_key_path(self) -> str | None:
        """The private key of :attr:`client_cert_path` (PEM); None without TLS."""
        return None if self.tls is None else self.tls.client.key_path

    def issue_client_cert(
        self, common_name: str, *, expired: bool = False, trusted: bool = True
    ) -> CertFiles:
        """Issue another client certificate: another CN, an expired one, or one from a CA
        the cluster does not trust (``trusted=False``). TLS clusters only."""
        if self.tls is None:
            raise RuntimeError("issue_client_cert() needs a TLS cluster (tls=True)")
        return self.tls.issue_client_cert(common_name, expired=expired, trusted=trusted)

    # -- requests -----------------------------------------------------------------

    def _gateway_urls(self) -> list[str]:
        """Client URLs to send the cluster's own requests to, best first."""
        return self.urls

    def _request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to etcd's JSON gateway, trying each member until one answers."""
        context: ssl.SSLContext | None = None
        if self.tls is not None:
            context = self.tls.ssl_context()
            context.check_hostname = False  # the cluster's own requests, even to a wrong name
        failures: list[str] = []
        for url in self._gateway_urls():
            try:
                return gateway(url, path, body, _REQUEST_TIMEOUT, context)
            except EtcdRequestError as exc:
                if exc.code == _NOT_FOUND:
                    raise
                failures.append(f"{url}: {exc}")
            except OSError as exc:
                failures.append(f"{url}: {exc}")
        raise EtcdRequestError(f"{path} failed on every member: " + "; ".join(failures))

    def compact(self) -> int:
        """Compact the history up to the current revision (physically); return it.

        After it a watch from an older revision is cancelled as compacted, as happens to
        a client that was away while etcd's auto-compaction ran.
        """
        header = self._request("/v3/kv/range", {"key": "AA==", "count_only": True})["header"]
        revision = int(header["revision"])
        try:
            self._request("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        except EtcdRequestError as exc:
            if "compacted" not in str(exc):  # already compacted at this revision: done
                raise
        return revision

    def keys(self, prefix: str | bytes) -> list[bytes]:
        """Every key under *prefix* (an election's keys are under ``NAME/``), in order."""
        start = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        end = _prefix_end(start)
        reply = self._request(
            "/v3/kv/range",
            {"key": _b64(start), "range_end": _b64(end), "keys_only": True},
        )
        return [base64.b64decode(kv["key"]) for kv in reply.get("kvs", [])]

    def wait_for_keys(
        self, prefix: str | bytes, count: int, *, timeout: float = 10.0
    ) -> list[bytes]:
        """Wait until at least *count* keys exist under *prefix*; return them.

        ``wait_for_keys("my-election/", 2)`` returns once two candidates are in line.

        Raises:
            TimeoutError: fewer keys than that after *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        while len(found := self.keys(prefix)) < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(found)} keys under {prefix!r} after {timeout}s, wanted {count}"
                )
            time.sleep(0.02)
        return found

    def expire(self, lease: SupportsIndex | Any) -> None:
        """Make *lease* expire now: its keys are deleted, its keepalives fail.

        *lease* is a lease ID, or anything with a ``lease`` attribute (a Leadership, a
        Session, a Leader). etcd has no "expire now" request; this revokes the lease
        (LeaseRevoke), which is what etcd itself does when a lease expires: its leader
        proposes the same revoke through raft, so watchers and keepalives see exactly
        what they would see on expiry. What it skips is the waiting.

        Raises:
            LookupError: the lease does not exist (expired or revoked already).
        """
        lease_id = _lease_id(lease)
        try:
            self._request("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdRequestError as exc:
            if exc.code == _NOT_FOUND:
                raise LookupError(f"lease {lease_id:x} not found: {exc}") from None
            raise

    # -- etcdctl ------------------------------------------------------------------

    def etcdctl_args(self) -> list[str]:
        """``etcdctl`` and the flags that reach this cluster (endpoints, certificates)."""
        args = [find_etcdctl(), f"--endpoints={','.join(self.urls)}"]
        if self.tls is not None:
            args += [
                f"--cacert={self.tls.ca_path}",
                f"--cert={self.tls.client.cert_path}",
                f"--key={self.tls.client.key_path}",
            ]
        return args

    def etcdctl(
        self, *args: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl ARGS`` against this cluster; return its output (text).

        Raises:
            subprocess.CalledProcessError: it failed and *check* is true.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        return subprocess.run(
            [*self.etcdctl_args(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=env,
        )

    # -- faults: a local cluster overrides these -----------------------------------

    def _unavailable(self, what: str) -> NoReturn:
        raise FaultUnavailable(
            f"{what}() needs a local etcd cluster; this one runs elsewhere ({self.endpoints})"
        )

    def kill(self, member: int) -> None:
        """SIGKILL a member."""
        self._unavailable("kill")

    def restart(self, member: int) -> None:
        """Start a member again with its data."""
        self._unavailable("restart")

    def pause(self, member: int) -> None:
        """Freeze a member (SIGSTOP)."""
        self._unavailable("pause")

    def resume(self, member: int) -> None:
        """Unfreeze a member (SIGCONT)."""
        self._unavailable("resume")

    def pause_for(self, member: int, seconds: float) -> None:
        """Freeze a member for *seconds*, without blocking the caller."""
        self._unavailable("pause_for")

    def blackhole(self, member: int) -> None:
        """Drop every byte between the clients and a member."""
        self._unavailable("blackhole")

    def delay(self, member: int, ms: float) -> None:
        """Delay the bytes between the clients and a member."""
        self._unavailable("delay")

    def partition(self, client_side: Iterable[int]) -> None:
        """Split the cluster; the clients stay with *client_side*."""
        self._unavailable("partition")

    def heal(self) -> None:
        """Undo every fault; nothing to undo here."""

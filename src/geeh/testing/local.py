"""The members of a local etcd cluster: ports, directories, processes, start and stop.

LocalCluster talks to etcd only over HTTP (/health, /metrics, the JSON gateway), so it
needs no gRPC stub. Both etcd 3.4 and 3.5 binaries are supported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from . import members as procs
from .base import EtcdCluster
from .binaries import find_etcd
from .members import EtcdStartError, Member, Settings
from .network import Network
from .probes import (
    LOCALHOST,
    free_ports,
    metric,
    probe_health,
    probe_is_leader,
    tail,
)
from .proxy import TcpProxy
from .tls import LOCAL_NAMES, ClusterTls

__all__ = ["EtcdStartError", "LocalCluster"]

# A bind failure in the member log means a reserved port was taken meanwhile.
_ADDR_IN_USE = "address already in use"
_PORTS_PER_MEMBER = 3  # client, peer, metrics


@dataclass
class _Resources:
    """Everything close() must release; shared with the weakref finalizer."""

    members: list[Member] = field(default_factory=list)
    network: Network | None = None
    timers: list[threading.Timer] = field(default_factory=list)
    temp_dir: str | None = None
    closed: bool = False


def _release(resources: _Resources) -> None:
    if resources.closed:
        return
    resources.closed = True
    for timer in resources.timers:
        timer.cancel()
    procs.stop(resources.members)
    if resources.network is not None:
        resources.network.close()
    if resources.temp_dir is not None:
        shutil.rmtree(resources.temp_dir, ignore_errors=True)


class LocalCluster(EtcdCluster):
    """The members of a local cluster: their ports, processes, start, stop and restart.

    :class:`~geeh.testing.LocalEtcdCluster` adds the faults; its docstring has the
    arguments.
    """

    def __init__(
        self,
        members: int = 1,
        *,
        data_dir: str | None = None,
        etcd_bin: str | None = None,
        election_timeout_ms: int = 1000,
        heartbeat_ms: int = 100,
        extra_args: Iterable[str] = (),
        log_dir: str | None = None,
        proxies: bool = False,
        tls: bool = False,
        client_cert_auth: bool = False,
        client_cn: str = "client",
        server_names: Sequence[str] = LOCAL_NAMES,
    ) -> None:
        if members < 1:
            raise ValueError("members must be >= 1")
        if heartbeat_ms < 1:
            raise ValueError("heartbeat_ms must be >= 1")
        if election_timeout_ms < 5 * heartbeat_ms:
            raise ValueError("election_timeout_ms must be at least 5 * heartbeat_ms")
        if client_cert_auth and not tls:
            raise ValueError("client_cert_auth needs tls=True")
        etcd_bin = find_etcd(etcd_bin)
        self._lock = threading.RLock()
        self._started = False
        self._resources = _Resources()
        if data_dir is None:
            base = self._resources.temp_dir = tempfile.mkdtemp(prefix="geeh-etcd-")
        else:
            base = os.path.abspath(data_dir)
            os.makedirs(base, exist_ok=True)
        self._base_dir = base
        logs = os.path.abspath(log_dir) if log_dir is not None else base
        os.makedirs(logs, exist_ok=True)
        self._finalizer = weakref.finalize(self, _release, self._resources)
        if tls:
            self.tls = ClusterTls(
                os.path.join(base, "tls"), server_names=server_names, client_cn=client_cn
            )
        self._settings = Settings(
            etcd_bin=etcd_bin,
            token=f"geeh-{uuid.uuid4().hex}",
            heartbeat_ms=heartbeat_ms,
            election_timeout_ms=election_timeout_ms,
            tls=self.tls,
            client_cert_auth=client_cert_auth,
            extra_args=tuple(extra_args),
        )
        ports = free_ports(_PORTS_PER_MEMBER * members)
        for i in range(members):
            client, peer, metrics = ports[_PORTS_PER_MEMBER * i : _PORTS_PER_MEMBER * (i + 1)]
            self._members.append(
                Member(
                    index=i,
                    name=f"m{i}",
                    client_port=client,
                    peer_port=peer,
                    metrics_port=metrics,
                    data_dir=os.path.join(base, f"m{i}.etcd"),
                    log_path=os.path.join(logs, f"m{i}.log"),
                    tls=tls,
                )
            )
        if proxies:
            self._resources.network = Network(self._members)

    # ---------------------------------------------------------------- info

    @property
    def _members(self) -> list[Member]:
        return self._resources.members

    @property
    def size(self) -> int:
        """Number of members."""
        return len(self._members)

    @property
    def etcd_bin(self) -> str:
        """Path of the etcd binary the members run."""
        return self._settings.etcd_bin

    @property
    def base_dir(self) -> str:
        """Directory holding the members' data dirs."""
        return self._base_dir

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints ``"127.0.0.1:PORT"``, one per member: the proxies' if any."""
        return [self.member_endpoint(m.index) for m in self._members]

    @property
    def direct_endpoints(self) -> list[str]:
        """The members' own client endpoints, bypassing any proxy."""
        return [f"{LOCALHOST}:{m.client_port}" for m in self._members]

    @property
    def client_urls(self) -> list[str]:
        """Client URLs (``http://`` or ``https://``), one per member; the proxies' if any."""
        return self.urls

    @property
    def has_proxies(self) -> bool:
        """True if a proxy stands in front of each member (``proxies=True``)."""
        return self._resources.network is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._resources.closed

    def member_endpoint(self, i: int) -> str:
        """Client endpoint ``"127.0.0.1:PORT"`` of member *i* (its proxy's, if any)."""
        m = self._member(i)
        return m.client_proxy.endpoint if m.client_proxy is not None else self.direct_endpoints[i]

    def member_name(self, i: int) -> str:
        """etcd ``--name`` of member *i* (``"m0"``, ``"m1"``, ...)."""
        return self._member(i).name

    def metrics(self, i: int, name: str, timeout: float = 1.0) -> list[float] | None:
        """The samples of etcd's metric *name* on member *i* (every label set), from its
        ``/metrics``; None if it cannot be read."""
        return metric(self._member(i).metrics_url, name, timeout)

    def client_port(self, i: int) -> int:
        """The client port member *i* itself listens on (behind its proxy, if any)."""
        return self._member(i).client_port

    def peer_port(self, i: int) -> int:
        """Peer (raft) port member *i* itself listens on."""
        return self._member(i).peer_port

    def proxy(self, i: int) -> TcpProxy:
        """The proxy in front of member *i*'s client port, for faults of your own."""
        proxy = self._member(i).client_proxy
        if proxy is None:
            raise RuntimeError("this cluster has no proxies: create it with proxies=True")
        return proxy

    def data_dir(self, i: int) -> str:
        """Data directory of member *i*."""
        return self._member(i).data_dir

    def log_path(self, i: int) -> str:
        """Path of the log file of member *i* (its stdout and stderr)."""
        return self._member(i).log_path

    def log_tail(self, i: int, lines: int = 30) -> str:
        """Last *lines* lines of member *i*'s log."""
        return tail(self.log_path(i), lines)

    def pid(self, i: int) -> int | None:
        """Process id of member *i*, or None if it is not running."""
        m = self._member(i)
        return m.proc.pid if m.proc is not None and m.alive() else None

    def is_running(self, i: int) -> bool:
        """True if member *i*'s process exists (a paused member counts as running)."""
        return self._member(i).alive()

    def is_paused(self, i: int) -> bool:
        """True if member *i* was paused and not resumed."""
        m = self._member(i)
        return m.paused and m.alive()

    is_stopped = is_paused  # the name before pause() was

    def is_healthy(self, i: int, timeout: float = 1.0) -> bool:
        """True if member *i* answers ``/health`` with ``"health": "true"``."""
        m = self._member(i)
        if not m.alive() or m.paused:
            return False
        return probe_health(m.metrics_url, timeout)[0]

    def leader_index(self, timeout: float = 1.0) -> int | None:
        """Index of the member that is the raft leader now.

        None if no running member, or more than one (a deposed leader that has not
        noticed yet), claims leadership.
        """
        leaders = [
            m.index
            for m in list(self._members)
            if m.alive() and not m.paused and probe_is_leader(m.metrics_url, timeout)
        ]
        return leaders[0] if len(leaders) == 1 else None

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("started" if self._started else "new")
        return f"<{type(self).__name__} {state} members={self.endpoints}>"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> None:
        """Start every member and wait until each one reports healthy.

        Raises:
            EtcdStartError: a member exited or the cluster did not become healthy within
                *timeout* seconds; the message has the tail of the member's log. No
                process is left running.
            RuntimeError: the cluster was already started or closed.
        """
        with self._lock:
            if self.closed:
                raise RuntimeError("cluster is closed")
            if self._started:
                raise RuntimeError("cluster already started")
            deadline = time.monotonic() + timeout
            attempts = 3
            try:
                for attempt in range(1, attempts + 1):
                    for m in self._members:
                        self._spawn(m, "new")
                    try:
                        procs.wait_healthy(self._members, deadline, self.etcd_bin)
                    except EtcdStartError:
                        in_use = any(_ADDR_IN_USE in tail(m.log_path, 200) for m in self._members)
                        if not in_use or attempt == attempts or time.monotonic() >= deadline:
                            raise
                        # A reserved port was taken by someone else: retry from scratch
                        # with fresh ports, data dirs and token.
                        self._reset_for_retry()
                        continue
                    break
            except BaseException:
                procs.stop(self._members)
                raise
            self._started = True

    def _reset_for_retry(self) -> None:
        procs.stop(self._members)
        ports = free_ports(_PORTS_PER_MEMBER * len(self._members))
        for m in self._members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
            first = _PORTS_PER_MEMBER * m.index
            m.client_port, m.peer_port, m.metrics_port = ports[first : first + 3]
            m.proc = None
        if self._resources.network is not None:
            self._resources.network.retarget()
        self._settings.token = f"geeh-{uuid.uuid4().hex}"

    def close(self) -> None:
        """Stop every member, the proxies, and remove the temporary directory.

        Paused members are resumed first; members get SIGTERM and are SIGKILLed if they
        have not exited after a short grace period. Idempotent.

        On SIGTERM an etcd leader first tries to hand leadership over to a peer it
        considers connected, and waits up to several seconds if that peer is shutting
        down too. So the followers are stopped first, and the leader once it has noticed
        that they are gone.
        """
        with self._lock:
            if self.closed:
                return
            for timer in self._resources.timers:
                timer.cancel()
            leader = None
            with contextlib.suppress(Exception):
                leader = self.leader_index(timeout=0.5)
            if leader is not None and len(self._members) > 1:
                procs.stop([m for m in self._members if m.index != leader])
                procs.wait_peers_inactive(self._members[leader], timeout=2.0)
            self._finalizer()  # runs _release once and detaches the finalizer

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_healthy(self, timeout: float = 30, members: Iterable[int] | None = None) -> None:
        """Wait until the given members (default: all running ones) report healthy.

        Raises:
            EtcdStartError: timeout or a member exited; includes the log tail.
        """
        if members is None:
            selected = [m for m in self._members if m.alive()]
        else:
            selected = [self._member(i) for i in members]
        procs.wait_healthy(selected, time.monotonic() + timeout, self.etcd_bin)

    # ------------------------------------------------------------ restart

    def restart(self, member: int, timeout: float = 30) -> None:
        """Start *member* again with its data and wait for its /health.

        A member that is still running is terminated first (SIGTERM). It keeps its
        name, ports and data (``--initial-cluster-state existing``).

        Raises:
            EtcdStartError: it exited or did not become healthy within *timeout* (the
                process is killed in that case).
        """
        with self._lock:
            if self.closed:
                raise RuntimeError("cluster is closed")
            if not self._started:
                raise RuntimeError("cluster not started")
            m = self._member(member)
            if m.alive():
                procs.stop([m])
            self._spawn(m, "existing")
            try:
                procs.wait_healthy([m], time.monotonic() + timeout, self.etcd_bin)
            except BaseException:
                procs.stop([m])
                raise

    # ------------------------------------------------------------ internals

    def _check_index(self, i: int) -> int:
        if not 0 <= i < len(self._members):
            raise IndexError(f"member index {i} out of range (cluster has {self.size})")
        return i

    def _member(self, i: int) -> Member:
        return self._members[self._check_index(i)]

    def _gateway_urls(self) -> list[str]:
        """The members' own URLs (past any proxy fault), the raft leader's first."""
        live = [m for m in self._members if m.alive() and not m.paused]
        leader = self.leader_index(timeout=0.5)
        live.sort(key=lambda m: m.index != leader)
        return [m.client_url for m in live]

    def _spawn(self, m: Member, state: str) -> None:
        procs.spawn(m, procs.command(self._settings, m, self._members, state))

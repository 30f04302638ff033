"""Throw-away local etcd clusters for tests, demos and benchmarks, with faults on demand.

Typical use::

    with LocalEtcdCluster(members=3, proxies=True) as cluster:
        print(cluster.endpoints)          # ['127.0.0.1:40123', ...]
        cluster.kill(cluster.leader_index())
        cluster.blackhole(1)
        cluster.heal()                    # restarts the killed member, lifts the blackhole

Members listen on 127.0.0.1 on free ports, with data in a temporary directory.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from . import members as procs
from .local import LocalCluster
from .network import Network

__all__ = ["EtcdFactory", "LocalEtcdCluster"]


class LocalEtcdCluster(LocalCluster):
    """A local etcd cluster of *members* processes listening on 127.0.0.1.

    Args:
        members: number of members (1 or more; odd numbers tolerate failures).
        data_dir: directory holding each member's data dir (``m0.etcd``, ...) and, unless
            *log_dir* is given, its log (``m0.log``, ...); kept by :meth:`close`. By
            default a temporary directory, removed by :meth:`close`.
        etcd_bin: etcd server binary (see :func:`~geeh.testing.find_etcd`).
        election_timeout_ms: etcd ``--election-timeout``; at least 5 * *heartbeat_ms*.
        heartbeat_ms: etcd ``--heartbeat-interval``.
        extra_args: additional command-line arguments for every member.
        log_dir: directory for the per-member log files (stdout and stderr).
        proxies: put a :class:`~geeh.testing.TcpProxy` in front of each member's client
            and peer ports, for :meth:`blackhole`, :meth:`delay` and :meth:`partition`.
            :attr:`endpoints` and the client URLs the members advertise (MemberList) are
            then the proxies'.
        tls: serve clients over TLS, with certificates made for this cluster
            (:attr:`tls`, :attr:`ca_path`, :attr:`client_cert_path`, ...).
        client_cert_auth: require a client certificate signed by the cluster's CA.
        client_cn: the CN of the client certificate :attr:`client_cert_path`.
        server_names: host names the members' certificate is valid for.

    Also a context manager: ``with LocalEtcdCluster(3) as c:`` starts it on entry and
    closes it on exit. If the object is garbage collected or the interpreter exits
    without :meth:`close`, the processes are stopped as a safety net.

    Methods are blocking and thread-safe; from asyncio code call them through
    :func:`asyncio.to_thread` when they may take long (start, restart, heal).
    """

    # ------------------------------------------------------ process faults

    def kill(self, member: int, timeout: float = 10) -> None:
        """SIGKILL *member* and wait until the process is gone (no-op if not running)."""
        with self._lock:
            m = self._member(member)
            if m.proc is None or not m.alive():
                return
            procs.send(m, signal.SIGKILL)
            if not procs.wait(m.proc, timeout):
                raise RuntimeError(f"member {m.name} (pid {m.proc.pid}) did not die after SIGKILL")
            m.paused = False

    def terminate(self, member: int, timeout: float = 10) -> None:
        """SIGTERM *member* (resuming it first if paused) and wait until it exits.

        Falls back to SIGKILL after *timeout* seconds. A no-op if it is not running.
        """
        with self._lock:
            m = self._member(member)
            if m.alive():
                procs.stop([m], grace=timeout)

    def pause(self, member: int) -> None:
        """Freeze *member* with SIGSTOP, like a stalled host: its connections stay open
        and its kernel still accepts new ones, but nothing is answered."""
        with self._lock:
            m = self._member(member)
            if m.proc is None or not m.alive():
                raise RuntimeError(f"member {m.name} is not running")
            procs.send(m, signal.SIGSTOP)
            m.paused = True
            procs.await_state(m, lambda s: s == "T", "paused")

    stop = pause  # the name before pause() was

    def resume(self, member: int) -> None:
        """Unfreeze *member* with SIGCONT after :meth:`pause`."""
        with self._lock:
            m = self._member(member)
            if m.proc is None or not m.alive():
                raise RuntimeError(f"member {m.name} is not running")
            procs.send(m, signal.SIGCONT)
            m.paused = False
            procs.await_state(m, lambda s: s != "T", "resumed")

    def pause_for(self, member: int, seconds: float) -> None:
        """Freeze *member* now and unfreeze it *seconds* later, without blocking.

        :meth:`resume`, :meth:`heal` and :meth:`close` end the pause early.
        """
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        with self._lock:
            self.pause(member)
            timer = threading.Timer(seconds, self._timed_resume, (member,))
            timer.daemon = True
            self._resources.timers.append(timer)
            timer.start()

    def _timed_resume(self, member: int) -> None:
        with self._lock:
            if not self.closed and self.is_paused(member):
                self.resume(member)

    # ------------------------------------------------------ network faults

    def _network(self, what: str) -> Network:
        network = self._resources.network
        if network is None:
            raise RuntimeError(f"{what}() needs proxies: create the cluster with proxies=True")
        return network

    def blackhole(self, member: int) -> None:
        """Drop every byte between the clients and *member*, both ways, connections left
        open (a silent network). Raft traffic between members is untouched."""
        self._network("blackhole").blackhole(self._check_index(member))

    def delay(self, member: int, ms: float) -> None:
        """Delay every byte between the clients and *member* by *ms* milliseconds, each
        way (a round trip takes 2 * *ms* longer). Raft traffic is untouched."""
        if ms < 0:
            raise ValueError("ms must be >= 0")
        self._network("delay").delay(self._check_index(member), ms / 1000)

    def partition(self, client_side: Iterable[int]) -> None:
        """Split the cluster in two, with the clients on the side of *client_side*.

        The members in *client_side* keep talking to each other and to the clients; the
        other members keep talking to each other, but every byte between the two sides,
        and between the clients and the far side, is dropped. ``partition([0])`` of
        three members leaves the clients with a minority member that has no leader;
        ``partition([0, 1])`` cuts member 2 off. :meth:`heal` ends it.
        """
        inside = [self._check_index(i) for i in client_side]
        self._network("partition").partition(inside)

    def heal(self, timeout: float = 30) -> None:
        """Undo every fault: end pauses and network faults, restart dead members, and
        wait until every member is healthy. Cheap when nothing was done."""
        with self._lock:
            if self.closed or not self._started:
                return
            for timer in self._resources.timers:
                timer.cancel()
            self._resources.timers.clear()
            network = self._resources.network
            changed = network is not None and network.faulted
            if network is not None and network.faulted:
                network.heal()
            for m in self._members:
                if m.alive() and m.paused:
                    self.resume(m.index)
                    changed = True
            for m in self._members:
                if not m.alive():
                    self.restart(m.index, timeout=timeout)
                    changed = True
            if changed:
                self.wait_healthy(timeout, members=range(self.size))


class EtcdFactory(Protocol):
    """The ``etcd_factory`` fixture: starts a :class:`LocalEtcdCluster` (same arguments)
    and returns it once healthy; ``proxies=None`` means the ``etcd_proxies`` ini option."""

    def __call__(
        self,
        members: int = 1,
        *,
        tls: bool = False,
        client_cert_auth: bool = False,
        proxies: bool | None = None,
        **options: Any,
    ) -> LocalEtcdCluster: ...

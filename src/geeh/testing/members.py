"""One etcd member process: its ports, directories, command line, start and stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from .probes import LOCALHOST, probe_active_peers, probe_health, process_state, tail
from .proxy import TcpProxy
from .tls import ClusterTls


class EtcdStartError(RuntimeError):
    """An etcd member failed to start or did not become healthy in time."""


# Seconds a member gets to exit after SIGTERM before it is SIGKILLed.
TERM_GRACE = 3.0
# Environment variables etcd reads itself are stripped from the child's environment,
# except this one, which some architectures need.
_KEEP_ETCD_ENV = frozenset({"ETCD_UNSUPPORTED_ARCH"})


@dataclass
class Member:
    """One member: where it listens, where its data and log go, its process."""

    index: int
    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data_dir: str
    log_path: str
    tls: bool = False
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    #: Proxies in front of the member's client and peer ports, when the cluster has them.
    client_proxy: TcpProxy | None = None
    peer_proxy: TcpProxy | None = None

    @property
    def client_url(self) -> str:
        """The member's own client URL (not its proxy's)."""
        return f"{'https' if self.tls else 'http'}://{LOCALHOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOCALHOST}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        """Plain HTTP /health and /metrics, whatever the client URL's TLS settings."""
        return f"http://{LOCALHOST}:{self.metrics_port}"

    @property
    def advertised_client_url(self) -> str:
        """What clients are told (MemberList): the proxy's URL when there is one."""
        if self.client_proxy is None:
            return self.client_url
        return f"{'https' if self.tls else 'http'}://{self.client_proxy.endpoint}"

    @property
    def advertised_peer_url(self) -> str:
        """What the other members dial: the peer proxy's URL when there is one."""
        return self.peer_url if self.peer_proxy is None else self.peer_proxy.url

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Settings:
    """The command-line settings every member of one cluster shares."""

    etcd_bin: str
    token: str
    heartbeat_ms: int
    election_timeout_ms: int
    tls: ClusterTls | None = None
    client_cert_auth: bool = False
    extra_args: tuple[str, ...] = field(default=())


def command(settings: Settings, m: Member, members: Sequence[Member], state: str) -> list[str]:
    """The etcd command line of member *m*; *state* is ``"new"`` or ``"existing"``."""
    initial_cluster = ",".join(f"{o.name}={o.advertised_peer_url}" for o in members)
    args = [
        settings.etcd_bin,
        f"--name={m.name}",
        f"--data-dir={m.data_dir}",
        f"--listen-client-urls={m.client_url}",
        f"--advertise-client-urls={m.advertised_client_url}",
        f"--listen-peer-urls={m.peer_url}",
        f"--initial-advertise-peer-urls={m.advertised_peer_url}",
        f"--listen-metrics-urls={m.metrics_url}",
        f"--initial-cluster={initial_cluster}",
        f"--initial-cluster-state={state}",
        f"--initial-cluster-token={settings.token}",
        f"--heartbeat-interval={settings.heartbeat_ms}",
        f"--election-timeout={settings.election_timeout_ms}",
        "--auto-compaction-retention=0",
        "--enable-pprof=false",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    if settings.tls is not None:
        args += [
            f"--cert-file={settings.tls.server.cert_path}",
            f"--key-file={settings.tls.server.key_path}",
        ]
        if settings.client_cert_auth:
            args += ["--client-cert-auth", f"--trusted-ca-file={settings.tls.ca_path}"]
    return [*args, *settings.extra_args]


def spawn(m: Member, cmd: list[str]) -> None:
    """Start member *m* with *cmd*, its stdout and stderr appended to its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_") or k in _KEEP_ETCD_ENV}
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
    m.paused = False


def send(m: Member, sig: signal.Signals) -> None:
    """Send *sig* to member *m* if it is running."""
    proc = m.proc
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to *timeout* seconds for *proc* to exit; True if it did."""
    try:
        proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return False
    return True


def stop(members: Sequence[Member], grace: float = TERM_GRACE) -> None:
    """SIGTERM (then SIGKILL after *grace*) every live member and reap it."""
    live = [m for m in members if m.alive()]
    for m in live:
        if m.paused:
            send(m, signal.SIGCONT)
            m.paused = False
    for m in live:
        send(m, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for m in live:
        assert m.proc is not None
        if not wait(m.proc, deadline - time.monotonic()):
            send(m, signal.SIGKILL)
    for m in live:
        assert m.proc is not None
        m.proc.wait()


def wait_healthy(members: Sequence[Member], deadline: float, etcd_bin: str) -> None:
    """Wait until every member of *members* answers /health as healthy.

    Raises:
        EtcdStartError: one exited, or *deadline* (monotonic) passed; with its log tail.
    """
    pending = list(members)
    last: dict[str, str] = {}
    while True:
        for m in list(pending):
            if m.proc is None or m.proc.poll() is not None:
                code = None if m.proc is None else m.proc.returncode
                raise EtcdStartError(
                    f"etcd member {m.name} exited with code {code} during start-up "
                    f"({etcd_bin}); log {m.log_path}:\n{tail(m.log_path)}"
                )
            if m.paused:
                last[m.name] = "member is paused (SIGSTOP)"
                continue
            remaining = deadline - time.monotonic()
            ok, why = probe_health(m.metrics_url, max(0.05, min(1.0, remaining)))
            last[m.name] = why
            if ok:
                pending.remove(m)
        if not pending:
            return
        if time.monotonic() >= deadline:
            details = "\n".join(
                f"--- {m.name} ({m.client_url}): {last.get(m.name, '?')}; "
                f"log {m.log_path}:\n{tail(m.log_path)}"
                for m in pending
            )
            raise EtcdStartError(
                f"etcd members {[m.name for m in pending]} not healthy in time\n{details}"
            )
        time.sleep(0.05)


def wait_peers_inactive(m: Member, timeout: float) -> None:
    """Wait (bounded, best effort) until member *m* sees no active peer."""
    deadline = time.monotonic() + timeout
    while m.alive() and time.monotonic() < deadline:
        active = probe_active_peers(m.metrics_url, 0.5)
        if active is None or active == 0:
            return
        time.sleep(0.01)


def await_state(m: Member, pred: Callable[[str], bool], what: str) -> None:
    """Wait briefly until /proc shows that a signal took effect (Linux only)."""
    assert m.proc is not None
    deadline = time.monotonic() + 5.0
    while True:
        state = process_state(m.proc.pid)
        if state is None or pred(state):
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"member {m.name} was not {what} (state {state!r})")
        time.sleep(0.005)

"""Beat replicas as processes, their coordinators behind proxies, and counting at the broker.

Shared by the beat benchmark (``python -m benchmarks.beat``) and tests/test_celery_beat.py.
Every replica runs ``celery -A benchmarks.beat_app beat`` with its own TCP proxies in front
of the coordinator (etcd or Redis), so that one replica can be cut off alone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from geeh.testing import TcpProxy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEEH_SCHEDULER = "geeh.celery:Scheduler"
REDBEAT_SCHEDULER = "redbeat.RedBeatScheduler"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``check`` until truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


# -- the broker: kombu's filesystem transport ----------------------------------------------------


@dataclass(frozen=True)
class Sent:
    at: float  # wall time of publication (the message's own header)
    pid: int


def sent(broker_dir: str) -> list[Sent]:
    """Every beat message in the broker's folder, in order of publication."""
    found = []
    for name in os.listdir(broker_dir):
        if not name.endswith(".msg"):
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            with open(os.path.join(broker_dir, name), encoding="utf-8") as fh:
                headers = json.load(fh)["headers"]
            found.append(Sent(float(headers["sent_at"]), int(headers["sent_by"])))
    return sorted(found, key=lambda s: s.at)


@dataclass
class Counts:
    """Per tick, from what reached the broker between ``start`` and ``end``."""

    sent: int
    twice: int  # a message less than half an interval after the one before it
    missed: int  # ticks with no message, from the gaps between messages
    longest_gap: float


def count(messages: Sequence[Sent], interval: float, start: float, end: float) -> Counts:
    times = [m.at for m in messages if start <= m.at <= end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    twice = sum(1 for g in gaps if g < interval / 2)
    missed = sum(max(0, round(g / interval) - 1) for g in gaps)
    return Counts(len(times), twice, missed, round(max(gaps, default=0.0), 2))


# -- coordinators --------------------------------------------------------------------------------


class RedisServer:
    """Debian's redis-server on a free port, in a temporary directory."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.dir = tempfile.mkdtemp(prefix="geeh-redis-")
        self.port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self.dir]
        log = open(os.path.join(self.dir, "redis.log"), "wb")  # noqa: SIM115 - closed in close
        self._log = log
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 10, "redis-server to accept connections")

    def _ready(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 1) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- beat replicas -------------------------------------------------------------------------------


@dataclass
class Replica:
    index: int
    proxies: list[TcpProxy]
    env: dict[str, str]
    log_path: str
    process: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)  # exit codes seen so far

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Beats:
    """``n`` beat replicas of one scheduler, each behind its own proxies to ``targets``.

    ``targets`` are the coordinator's (host, port) pairs: the etcd members for gee-h, the
    Redis server for redbeat. ``env`` adds to each replica's environment; ``endpoint_env``
    makes the variable that names a replica's proxies.
    """

    def __init__(
        self,
        scheduler: str,
        n: int,
        targets: Sequence[tuple[str, int]],
        endpoint_env: Callable[[list[str]], dict[str, str]],
        env: dict[str, str],
        work_dir: str,
    ) -> None:
        self.scheduler = scheduler
        self.broker_dir = os.path.join(work_dir, "broker")
        os.makedirs(self.broker_dir, exist_ok=True)
        self.replicas: list[Replica] = []
        for index in range(n):
            proxies = [TcpProxy(host, port).start() for host, port in targets]
            child_env = dict(os.environ)
            child_env.update(env)
            child_env.update(endpoint_env([p.endpoint for p in proxies]))
            child_env["BEAT_BROKER_DIR"] = self.broker_dir
            child_env["PYTHONPATH"] = os.pathsep.join(
                [os.path.join(REPO, "src"), REPO, child_env.get("PYTHONPATH", "")]
            )
            log_path = os.path.join(work_dir, f"beat-{index}.log")
            self.replicas.append(Replica(index, proxies, child_env, log_path))

    def start(self, replica: Replica) -> None:
        args = [sys.executable, "-m", "celery", "-A", "benchmarks.beat_app", "beat"]
        args += ["-S", self.scheduler, "--loglevel", "INFO"]
        args += ["-s", os.path.join(os.path.dirname(replica.log_path), f"sched-{replica.index}")]
        with open(replica.log_path, "ab") as log:
            replica.process = subprocess.Popen(
                args, cwd=REPO, env=replica.env, stdout=log, stderr=subprocess.STDOUT
            )

    def start_all(self) -> None:
        for replica in self.replicas:
            self.start(replica)

    def restart_stopped(self) -> None:
        """Start again every replica that has exited (a supervisor's job)."""
        for replica in self.replicas:
            if replica.process is not None and replica.process.poll() is not None:
                replica.exits.append(replica.process.returncode)
                self.start(replica)

    def running(self) -> int:
        return sum(r.running() for r in self.replicas)

    def messages(self) -> list[Sent]:
        return sent(self.broker_dir)

    def leader(self, after: float) -> Replica:
        """The replica that sent the latest message after ``after`` (waits for one)."""

        def latest() -> Replica | None:
            recent = [m for m in self.messages() if m.at > after]
            if not recent:
                return None
            pid = recent[-1].pid
            return next((r for r in self.replicas if r.running() and r.pid == pid), None)

        found = wait_for(latest, 30, "a replica to send")
        assert isinstance(found, Replica)
        return found

    def signal(self, replica: Replica, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(replica.pid, sig)

    def cut(self, replica: Replica) -> None:
        for proxy in replica.proxies:
            proxy.blackhole()

    def heal(self, replica: Replica) -> None:
        for proxy in replica.proxies:
            proxy.pass_through()

    def close(self) -> None:
        for replica in self.replicas:
            process = replica.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for proxy in replica.proxies:
                proxy.close()

    def logs(self) -> str:
        parts = []
        for replica in self.replicas:
            with contextlib.suppress(OSError), open(replica.log_path, errors="replace") as fh:
                parts.append(f"--- replica {replica.index}\n{fh.read()[-4000:]}")
        return "\n".join(parts)


def geeh_env(endpoints: list[str]) -> dict[str, str]:
    return {"GEEH_ENDPOINTS": ",".join(endpoints)}


def redis_env(endpoints: list[str]) -> dict[str, str]:
    return {"REDBEAT_URL": f"redis://{endpoints[0]}/0"}

"""What every benchmark shares: configuration, statistics, child processes, the machine."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import geeh
from geeh._proto import rpc_pb2 as rpc
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import DELETE, PUT, RANGE
from geeh.testing import find_etcd, find_etcdctl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
LOG_DIR = tempfile.mkdtemp(prefix="geeh-bench-logs-")

GEEH = "gee-h"
ETCDCTL = "etcdctl"


# -- configuration -----------------------------------------------------------------------------


@dataclass
class Config:
    quick: bool = False

    def n(self, full: int, quick: int) -> int:
        """A trial count: ``full`` normally, ``quick`` with --quick."""
        return quick if self.quick else full

    def secs(self, full: float, quick: float) -> float:
        return quick if self.quick else full


# -- statistics --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not samples:
        return math.nan
    s = sorted(samples)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Series:
    """Samples of one measured quantity (seconds unless said otherwise)."""

    label: str
    samples: list[float] = field(default_factory=list)
    failures: int = 0
    requests: list[Counter[str]] = field(default_factory=list)  # etcd's count, per sample

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def requests_per_sample(self) -> float:
        """Mean of the etcd requests counted per sample (all methods)."""
        if not self.requests:
            return math.nan
        return sum(sum(c.values()) for c in self.requests) / len(self.requests)

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else math.nan

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan


def ms(value: float) -> str:
    if value != value:
        return "n/a"
    return f"{value * 1000:.2f}"


def ratio(a: float, b: float) -> str:
    if a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


# -- child processes ---------------------------------------------------------------------------

_ALL: list[Proc] = []


class Proc:
    """A child process whose stdout lines are time-stamped (time.monotonic) as they arrive.

    A thread per child does the blocking reads and takes the time stamp the moment a line is
    read, so the time stamp does not depend on when the event loop gets round to it.
    CLOCK_MONOTONIC is system-wide, so these stamps compare with ones taken in other processes.
    """

    def __init__(self, argv: Sequence[str], label: str, *, stdin: bool = False) -> None:
        self.label = label
        self.argv = list(argv)
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.lines: list[tuple[float, bytes]] = []
        self.eof = False
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.stderr_path = os.path.join(LOG_DIR, f"{label}-{len(_ALL)}.err")
        with open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env=env,
                start_new_session=True,  # a Ctrl-C on the terminal goes to us, not to them
            )
        _ALL.append(self)
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"read-{label}")
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        out = self.popen.stdout
        assert out is not None
        for raw in iter(out.readline, b""):
            stamp = time.monotonic()
            self.lines.append((stamp, raw.rstrip(b"\n")))
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)
        self.eof = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait_line(
        self, pred: Callable[[bytes], bool], start: int = 0, timeout: float = 30.0
    ) -> tuple[float, bytes, int]:
        """The first line at index >= ``start`` that satisfies ``pred``: (stamp, line, index)."""
        deadline = time.monotonic() + timeout
        while True:
            self._event.clear()
            for i in range(start, len(self.lines)):
                stamp, line = self.lines[i]
                if pred(line):
                    return stamp, line, i
            if self.eof:
                raise RuntimeError(f"{self.label} exited ({self.tail_stderr()})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: no matching line ({self.tail_stderr()})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.popen.wait, timeout)
        return self.popen.poll()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGINT, then SIGKILL if it has not exited within ``timeout``."""
        if self.popen.poll() is None:
            self.signal(signal.SIGINT)
            await self.wait_exit(timeout)
        self.kill()

    def tail_stderr(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                text = f.read()[-400:].decode(errors="replace").strip()
        except OSError:
            return "no stderr"
        return text.replace("\n", " | ") or "no stderr"


def kill_all() -> None:
    """Leave no process running: SIGKILL every child still alive."""
    for p in _ALL:
        p.kill()
    _ALL.clear()


# -- elect commands: gee-h's CLI (or our fallback script) and etcdctl ------------------------

_CLI: list[str] | None = None


def geeh_cli() -> list[str]:
    """``python -m geeh.cli`` if it works, else benchmarks/elect_cli.py (same behaviour)."""
    global _CLI
    if _CLI is None:
        probe = subprocess.run(
            [sys.executable, "-m", "geeh.cli", "elect", "--help"],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        if probe.returncode == 0 and "--listen" in probe.stdout:
            _CLI = [sys.executable, "-m", "geeh.cli"]
        else:
            _CLI = [sys.executable, "-m", "benchmarks.elect_cli"]
    return _CLI


def geeh_cli_name() -> str:
    return "python -m geeh.cli" if geeh_cli()[-1] == "geeh.cli" else "benchmarks/elect_cli.py"


def elect_argv(
    impl: str, endpoints: Sequence[str], name: str, value: str, ttl: int | None = None
) -> list[str]:
    eps = ",".join(endpoints)
    if impl == ETCDCTL:
        return [find_etcdctl(), f"--endpoints={eps}", "elect", name, value]
    argv = [*geeh_cli(), "elect", name, value, "--endpoints", eps]
    if ttl is not None:
        argv += ["--ttl", str(ttl)]
    return argv


def listen_argv(impl: str, endpoints: Sequence[str], name: str) -> list[str]:
    eps = ",".join(endpoints)
    if impl == ETCDCTL:
        return [find_etcdctl(), f"--endpoints={eps}", "elect", "-l", name]
    return [*geeh_cli(), "elect", "--listen", name, "--endpoints", eps]


def is_key_of(name: str) -> Callable[[bytes], bool]:
    prefix = election_prefix(name)
    return lambda line: line.startswith(prefix)


# -- the driver's own view of etcd ------------------------------------------------------------


class Etcd:
    """Raw etcd operations for the driver, over gee-h's transport (one Client)."""

    def __init__(self, client: geeh.Client) -> None:
        self.client = client
        self.transport = client.core.transport

    async def count(self, name: str) -> int:
        prefix = election_prefix(name)
        response = await self.transport.call(
            RANGE, rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        )
        return int(response.count)

    async def keys(self, name: str) -> list[bytes]:
        prefix = election_prefix(name)
        response = await self.transport.call(
            RANGE,
            rpc.RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                keys_only=True,
                sort_order=rpc.RangeRequest.ASCEND,
                sort_target=rpc.RangeRequest.CREATE,
            ),
        )
        return [kv.key for kv in response.kvs]

    async def revision(self) -> int:
        response = await self.transport.call(RANGE, rpc.RangeRequest(key=b"\0", count_only=True))
        return int(response.header.revision)

    async def wait_count(
        self, name: str, n: int, timeout: float = 30.0, poll: float = 0.01
    ) -> None:
        deadline = time.monotonic() + timeout
        while await self.count(name) != n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"election {name}: never reached {n} keys")
            await asyncio.sleep(poll)

    async def put(self, key: bytes, value: bytes = b"x") -> int:
        response = await self.transport.call(PUT, rpc.PutRequest(key=key, value=value))
        return int(response.header.revision)

    async def delete(self, key: bytes, range_end: bytes = b"") -> None:
        await self.transport.call(DELETE, rpc.DeleteRangeRequest(key=key, range_end=range_end))

    async def clear(self, name: str) -> None:
        prefix = election_prefix(name)
        await self.delete(prefix, prefix_end(prefix))


# -- etcd's own request counters ----------------------------------------------------------------

_METRIC = re.compile(
    r'^grpc_server_msg_received_total\{grpc_method="(\w+)",grpc_service="([\w.]+)",'
    r'grpc_type="(\w+)"\} (\S+)$'
)


def scrape(url: str, *, unary_only: bool = False) -> dict[str, float]:
    """Messages etcd received (``Service.Method`` -> count), from ``url``/metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url + "/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m and float(m.group(4)) and (m.group(3) == "unary" or not unary_only):
            out[f"{m.group(2).rsplit('.', 1)[-1]}.{m.group(1)}"] = float(m.group(4))
    return out


def unary_requests(urls: Sequence[str]) -> Counter[str]:
    """Unary requests all members have received so far, by method."""
    total: Counter[str] = Counter()
    for url in urls:
        total.update(scrape(url, unary_only=True))
    return total


# -- the machine -------------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    import grpc

    rev = _first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if dirty:
        rev += " + uncommitted changes in src/"
    virt = (
        _first_line(["systemd-detect-virt"])
        if os.path.exists("/usr/bin/systemd-detect-virt")
        else ""
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "virtualization": virt or "unknown",
        "python": platform.python_version() + " (" + platform.python_implementation() + ")",
        "grpcio": grpc.__version__,
        "gee-h": f"{geeh.__version__} (git {rev})",
        "etcd": _first_line([find_etcd(), "--version"]),
        "etcdctl": _first_line([find_etcdctl(), "version"]),
        "gee-h CLI used": geeh_cli_name(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }

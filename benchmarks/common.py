"""What every benchmark shares: configuration, statistics, child processes, the machine, and
the conversion of a stage's results to JSON."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
    out_dir: str = RESULTS  # where stages write files of their own (profiles)

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


# -- elect commands: gee-h's CLI and etcdctl -------------------------------------------------


def geeh_cli() -> list[str]:
    return [sys.executable, "-m", "geeh.cli"]


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


# -- etcd's own counters ----------------------------------------------------------------------

_METRIC = re.compile(
    r'^grpc_server_msg_(received|sent)_total\{grpc_method="(\w+)",grpc_service="([\w.]+)",'
    r'grpc_type="(\w+)"\} (\S+)$'
)


def scrape(url: str, *, unary_only: bool = False, sent: bool = False) -> dict[str, float]:
    """Messages etcd received (or sent) by ``Service.Method``, from ``url``/metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url + "/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m or m.group(1) != ("sent" if sent else "received") or not float(m.group(5)):
            continue
        if m.group(4) == "unary" or not unary_only:
            out[f"{m.group(3).rsplit('.', 1)[-1]}.{m.group(2)}"] = float(m.group(5))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counters that grew between two scrapes, by how much."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def unary_requests(urls: Sequence[str]) -> Counter[str]:
    """Unary requests all members have received so far, by method."""
    total: Counter[str] = Counter()
    for url in urls:
        total.update(scrape(url, unary_only=True))
    return total


# -- results as JSON ---------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Plain JSON data: a dataclass becomes its fields plus its properties (so a Series
    carries its median, p90, ...), tuple keys are joined by "-", NaN becomes null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name, attr in vars(type(obj)).items():
            if isinstance(attr, property):
                out[name] = jsonable(getattr(obj, name))
        return out
    if isinstance(obj, dict):
        return {
            "-".join(map(str, k)) if isinstance(k, tuple) else str(k): jsonable(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# -- the machine -------------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return ((out.stdout or out.stderr).strip().splitlines() or ["unknown"])[0]


def _proc_field(path: str, name: str) -> str:
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine() -> dict[str, Any]:
    import grpc

    rev = _first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    if _first_line(["git", "-C", REPO, "status", "--porcelain", "--", "src"]) not in (
        "",
        "unknown",
    ):
        rev += " + uncommitted changes in src/"
    mem = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory": f"{int(mem) / 2**20:.1f} GiB" if mem.isdigit() else mem,
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "grpcio": grpc.__version__,
        "gee-h": f"{geeh.__version__} (git {rev})",
        "etcd": _first_line([find_etcd(), "--version"]),
        "etcdctl": _first_line([find_etcdctl(), "version"]),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }

"""What every benchmark shares: configuration, statistics, time-stamped lines from child
processes (or from observers in this process), the driver's view of etcd and its counters, the
trial loop, and the conversion of a stage's results to JSON."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import geeh
from geeh._proto import rpc_pb2 as rpc
from geeh.keys import election_prefix, prefix_end
from geeh.net.retry import DELETE, PUT, RANGE
from geeh.testing import LocalEtcdCluster, find_etcdctl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
LOG_DIR = tempfile.mkdtemp(prefix="geeh-bench-logs-")
GEEH, ETCDCTL = "gee-h", "etcdctl"
T = TypeVar("T")


@dataclass
class Config:
    quick: bool = False
    out_dir: str = RESULTS  # where stages write files of their own (profiles)

    def n(self, full: T, quick: T) -> T:
        """A trial count (or a duration): ``full`` normally, ``quick`` with --quick."""
        return quick if self.quick else full


# -- statistics --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not samples:
        return math.nan
    s = sorted(samples)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


@dataclass
class Series:
    """Samples of one measured quantity (seconds unless said otherwise)."""

    label: str
    samples: list[float] = field(default_factory=list)
    failures: int = 0
    requests: list[Counter[str]] = field(default_factory=list)  # etcd's count, per sample

    def add(self, value: float) -> None:
        self.samples.append(value)

    n = property(lambda self: len(self.samples))
    median = property(lambda self: percentile(self.samples, 50))
    p90 = property(lambda self: percentile(self.samples, 90))
    p99 = property(lambda self: percentile(self.samples, 99))

    @property
    def requests_per_sample(self) -> float:
        """Mean of the etcd requests counted per sample (all methods)."""
        if not self.requests:
            return math.nan
        return sum(sum(c.values()) for c in self.requests) / len(self.requests)

    min = property(lambda self: min(self.samples) if self.samples else math.nan)
    max = property(lambda self: max(self.samples) if self.samples else math.nan)


async def attempt(series: Series, what: str, trial: Awaitable[float]) -> bool:
    """One trial into ``series``; a timeout or a dead process counts as a failure."""
    try:
        series.add(await trial)
        return True
    except (TimeoutError, RuntimeError) as err:
        print(f"    {what} trial failed: {err}")
        series.failures += 1
        return False


def rotation(rounds: int, items: Sequence[T]) -> Iterator[T]:
    """Every item ``rounds`` times, each round starting one item further: interleaved trials,
    so that drift and noise fall on every kind alike."""
    for k in range(rounds):
        shift = k % len(items)
        yield from [*items[shift:], *items[:shift]]


# -- time-stamped lines ----------------------------------------------------------------------


class Lines:
    """Lines stamped with time.monotonic() as they arrive, and a wait for one that matches.

    CLOCK_MONOTONIC is system-wide, so these stamps compare with ones taken in other processes.
    """

    label = "lines"

    def __init__(self) -> None:
        self.lines: list[tuple[float, bytes]] = []
        self.eof = False
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def add(self, line: bytes) -> None:
        """A line, stamped now (from the event loop's thread)."""
        self.lines.append((time.monotonic(), line))
        self._event.set()

    def tail_stderr(self) -> str:
        return "no stderr"

    async def stop(self) -> None:
        """Stop what feeds the lines (here: nothing)."""

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


class Feed(Lines):
    """Lines from an observer in this event loop: ``watch(add)`` runs as a task until stop."""

    def __init__(self, label: str, watch: Callable[[Callable[[bytes], None]], Awaitable[None]]):
        super().__init__()
        self.label = label
        self.task = asyncio.ensure_future(watch(self.add))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


_ALL: list[Proc] = []


class Proc(Lines):
    """A child process whose stdout lines are stamped as they arrive: a thread per child does
    the blocking reads and stamps a line the moment it is read, whenever the loop gets to it."""

    def __init__(self, argv: Sequence[str], label: str, *, stdin: bool = False) -> None:
        super().__init__()
        self.label = label
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.stderr_path = os.path.join(LOG_DIR, f"{label}-{len(_ALL)}.err")
        with open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env=env,
                start_new_session=True,  # a Ctrl-C on the terminal goes to us, not to them
            )
        self.pid = self.popen.pid
        _ALL.append(self)
        threading.Thread(target=self._read, daemon=True, name=f"read-{label}").start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            self.lines.append((time.monotonic(), raw.rstrip(b"\n")))
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)
        self.eof = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

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


# What each command is, for etcdctl and for gee-h's CLI.
COMMANDS = {
    "elect": (["elect"], ["elect"]),
    "listen": (["elect", "-l"], ["elect", "--listen"]),
    "observe": (["elect", "-l"], ["observe"]),
    "watch": (["watch"], []),
}


def cli(
    impl: str, endpoints: Sequence[str], command: str, *args: str, ttl: int | None = None
) -> list[str]:
    """The argv of ``command`` (see COMMANDS) for ``impl``; ``ttl`` is gee-h's alone."""
    words, eps = COMMANDS[command][impl == GEEH], ",".join(endpoints)
    if impl == ETCDCTL:
        return [find_etcdctl(), f"--endpoints={eps}", *words, *args]
    ttl_args = ["--ttl", str(ttl)] if ttl is not None else []
    return [sys.executable, "-m", "geeh.cli", *words, *args, "--endpoints", eps, *ttl_args]


def is_key_of(name: str) -> Callable[[bytes], bool]:
    prefix = election_prefix(name)
    return lambda line: line.startswith(prefix)


# -- etcd: the driver's own view, and etcd's counters ------------------------------------------


@contextlib.asynccontextmanager
async def local_etcd(members: int = 1) -> AsyncIterator[LocalEtcdCluster]:
    cluster = LocalEtcdCluster(members)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


class Etcd:
    """Raw etcd operations for the driver, over gee-h's transport (one Client)."""

    def __init__(self, client: geeh.Client) -> None:
        self.transport = client.core.transport

    async def count(self, name: str) -> int:
        prefix = election_prefix(name)
        request = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        return int((await self.transport.call(RANGE, request)).count)

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


_METRIC = re.compile(
    r'^grpc_server_msg_(received|sent)_total\{grpc_method="(\w+)",grpc_service="([\w.]+)",'
    r'grpc_type="(\w+)"\} (\S+)$'
)


def scrape(url: str, *, unary_only: bool = False, sent: bool = False) -> dict[str, float]:
    """Messages etcd received (or sent) by ``Service.Method``, from ``url``/metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url + "/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for m in filter(None, map(_METRIC.match, text.splitlines())):
        if m.group(1) != ("sent" if sent else "received") or not float(m.group(5)):
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


async def idle(seconds: float, read: Callable[[], T]) -> tuple[T, T, float]:
    """``read()`` before and after an idle window: (before, after, the window's seconds)."""
    before, t0 = read(), time.monotonic()
    await asyncio.sleep(seconds)
    after = read()
    return before, after, time.monotonic() - t0


def process_cpu(pid: int) -> float:
    """utime + stime of ``pid``, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

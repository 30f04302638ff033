"""2. Observer notification: from a leader change until an observer reports the new leader.

A trial deletes an election's leader key (so the next-oldest key leads) and times each of its
observers from the Delete to its report. ``run``: every kind of observer (``etcdctl elect -l``,
``geeh elect --listen``, ``observe()`` in-process, and the floor: a raw watch event) on an
election of its own, woken one per trial in rotation. ``side_by_side`` (2c): ``geeh observe``
and ``etcdctl elect -l`` on one election, woken by the same Delete, interleaved with each
alone; then, with py-spy installed, the gee-h observer profiled over more trials.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import geeh
from geeh.keys import election_prefix, prefix_end

from .common import ETCDCTL, GEEH, Config, Etcd, Feed, Lines, Proc, Series, attempt, cli, rotation

SETTLE = 0.05
FLOOR = "floor"


class Election:
    """An election with a leader key and one waiting key, and the observers of it."""

    def __init__(self, name: str, etcd: Etcd) -> None:
        self.name, self.prefix, self.etcd = name, election_prefix(name), etcd
        self.n = 0
        self.keys: list[bytes] = []
        self.observers: dict[str, Lines] = {}

    async def add_key(self) -> None:
        key = self.prefix + f"{0x1000 + self.n:x}".encode()
        self.n += 1
        await self.etcd.put(key, b"value-" + key[-4:])
        self.keys.append(key)

    async def start(self, observers: dict[str, Callable[[Election], Lines]]) -> None:
        await self.etcd.clear(self.name)
        await self.add_key()
        await self.add_key()
        for kind, make in observers.items():
            self.observers[kind] = lines = make(self)
            if kind != FLOOR:
                await lines.wait_line(self.keys[0].__eq__, timeout=30)

    async def trial(self) -> dict[str, float]:
        old, new = self.keys[0], self.keys[1]
        starts = {kind: len(o.lines) for kind, o in self.observers.items()}
        t0 = time.monotonic()
        await self.etcd.delete(old)
        out: dict[str, float] = {}
        for kind, o in self.observers.items():
            # The raw watch reports the Delete itself; observers report the new leader.
            want = old if kind == FLOOR else new
            t1, _, _ = await o.wait_line(want.__eq__, starts[kind], timeout=30)
            out[kind] = t1 - t0
        self.keys.pop(0)
        await self.add_key()
        return out

    async def close(self) -> None:
        for o in self.observers.values():
            await o.stop()
        await self.etcd.clear(self.name)


async def _observe(client: geeh.Client, e: Election, add: Callable[[bytes], None]) -> None:
    async with client.election(e.name).observe() as changes:
        async for leader in changes:
            if leader is not None:
                add(leader.key)


async def _raw_watch(client: geeh.Client, e: Election, add: Callable[[bytes], None]) -> None:
    start = await e.etcd.revision() + 1
    watch = client.core.watches.watch(
        e.prefix, range_end=prefix_end(e.prefix), start_revision=start
    )
    with watch:
        while True:
            for event in (await watch.next()).events:
                if event.type == event.DELETE:
                    add(event.kv.key)


def _process(impl: str, endpoints: list[str], command: str) -> Callable[[Election], Lines]:
    return lambda e: Proc(cli(impl, endpoints, command, e.name), f"{impl}-{command}")


async def _latency(e: Election, kind: str) -> float:
    return (await e.trial())[kind]


LABELS = {
    ETCDCTL: "etcdctl elect -l (process)",
    GEEH: "geeh elect --listen (process)",
    "in-process": "gee-h observe() in-process",
    FLOOR: "floor: Delete + raw watch event",
}


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Series]:
    series = {kind: Series(label) for kind, label in LABELS.items()}
    async with geeh.Client(endpoints) as client:
        makers = {
            ETCDCTL: _process(ETCDCTL, endpoints, "listen"),
            GEEH: _process(GEEH, endpoints, "listen"),
            "in-process": lambda e: Feed("in-process", partial(_observe, client, e)),
            FLOOR: lambda e: Feed(FLOOR, partial(_raw_watch, client, e)),
        }
        elections = {kind: Election(f"bench-observe-{kind}", etcd) for kind in LABELS}
        try:
            for kind, e in elections.items():
                await e.start({kind: makers[kind]})
                await asyncio.sleep(0.3)
            for kind in rotation(cfg.n(80, 24), list(LABELS)):
                await asyncio.sleep(SETTLE)
                await attempt(series[kind], f"observer {kind}", _latency(elections[kind], kind))
        finally:
            for e in elections.values():
                await e.close()
    return series


# -- 2c. side by side --------------------------------------------------------------------------

CONCURRENT, SEQUENTIAL = "concurrent", "sequential"


async def side_by_side(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Any]:
    rounds = cfg.n(80, 20)
    series = {
        (mode, impl): Series(f"{impl} ({mode})")
        for mode in (CONCURRENT, SEQUENTIAL)
        for impl in (GEEH, ETCDCTL)
    }
    observe = {impl: _process(impl, endpoints, "observe") for impl in (GEEH, ETCDCTL)}
    elections = {impl: Election(f"bench-alone-{impl}", etcd) for impl in (GEEH, ETCDCTL)}
    pair = elections[CONCURRENT] = Election("bench-concurrent", etcd)
    profile: dict[str, list[tuple[str, float]]] = {}
    spy: subprocess.Popen[bytes] | None = None
    raw = os.path.join(tempfile.gettempdir(), "geeh-bench-concurrent.pyspy")
    try:
        await pair.start(observe)
        for impl in (GEEH, ETCDCTL):
            await elections[impl].start({impl: observe[impl]})
        await asyncio.sleep(0.5)
        for step in rotation(rounds, [CONCURRENT, GEEH, ETCDCTL]):
            await asyncio.sleep(SETTLE)
            try:
                got = await elections[step].trial()
                for impl, value in got.items():
                    series[(CONCURRENT if step == CONCURRENT else SEQUENTIAL, impl)].add(value)
            except (TimeoutError, RuntimeError) as err:
                print(f"    concurrent observers, {step} trial failed: {err}")
        # Profiled apart, after the timed trials: the sampler takes CPU from the same 2 cores.
        binary = _py_spy()
        if binary is not None:
            observed = pair.observers[GEEH]
            assert isinstance(observed, Proc)
            spy = _start_spy(binary, observed.pid, raw)
            await asyncio.sleep(1.0)
            for _ in range(rounds * 3):
                await asyncio.sleep(SETTLE)
                with contextlib.suppress(TimeoutError, RuntimeError):
                    await pair.trial()
            profile = await asyncio.to_thread(_finish_spy, spy, raw, cfg.out_dir)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        for e in elections.values():
            await e.close()
    return {"series": series, "profile": profile, "profiled": spy is not None}


def _py_spy() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def _start_spy(binary: str, pid: int, raw: str) -> subprocess.Popen[bytes]:
    argv = [binary, "record", "--format", "raw", "--rate", "1000", "--nonblocking"]
    argv += ["--pid", str(pid), "--output", raw]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _finish_spy(
    spy: subprocess.Popen[bytes], raw: str, out_dir: str
) -> dict[str, list[tuple[str, float]]]:
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled
    with contextlib.suppress(subprocess.TimeoutExpired):
        spy.wait(20)
    if not os.path.exists(raw):
        return {}
    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(raw, os.path.join(out_dir, "profile-concurrent-observer.txt"))
    return summarize_profile(raw)


def _function(frame: str) -> str:
    """``name (file.py:line)`` -> ``name (file.py)``: lines of one function add up."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize_profile(path: str, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's raw (collapsed) stacks, shares of the busy samples: ``self`` by the
    function on top of the stack, ``inclusive`` by gee-h and gRPC functions anywhere on it."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit() or not stack:
                continue
            frames = [_function(fr) for fr in stack.split(";")]
            own[frames[-1]] += int(count)
            for frame in set(frames):
                if ("geeh/" in frame and "geeh/cli/__" not in frame) or "grpc" in frame:
                    inclusive[frame] += int(count)
    total = own.total()
    if not total:
        return {}
    return {
        "samples": [("busy samples", float(total))],
        "self": [(fr, n / total) for fr, n in own.most_common(top)],
        "inclusive": [(fr, n / total) for fr, n in inclusive.most_common(top)],
    }

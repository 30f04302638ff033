"""2c. Observers side by side: gee-h and ``etcdctl elect -l`` hear the same leader change.

Section 2 wakes one observer per trial. In production observers run side by side, so here
``geeh observe`` and ``etcdctl elect -l`` watch the same election, in separate processes on
the same cores, and one Delete wakes both: each is timed from the Delete to its own printed
line. Interleaved with those trials, in the same run, the sequential case again: the same
two commands each on an election of its own, woken one at a time.

When py-spy is installed, the gee-h observer of the side-by-side pair is profiled over the
trials (``py-spy record --format raw``, busy samples only), and the report lists where
its samples fell; the profile is written to benchmarks/results/.
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
from collections.abc import Sequence
from typing import Any

from geeh.keys import election_prefix
from geeh.testing import find_etcdctl

from .common import ETCDCTL, GEEH, Config, Etcd, Proc, Series, geeh_cli

SETTLE = 0.05
CONCURRENT = "concurrent"
SEQUENTIAL = "sequential"


def observe_argv(impl: str, endpoints: Sequence[str], name: str) -> list[str]:
    eps = ",".join(endpoints)
    if impl == ETCDCTL:
        return [find_etcdctl(), f"--endpoints={eps}", "elect", "-l", name]
    return [*geeh_cli(), "observe", name, "--endpoints", eps]


class Election:
    """An election with a leader key and one waiting key, and the observers of it."""

    def __init__(self, name: str, etcd: Etcd) -> None:
        self.name = name
        self.prefix = election_prefix(name)
        self.etcd = etcd
        self.n = 0
        self.keys: list[bytes] = []
        self.procs: dict[str, Proc] = {}

    async def add_key(self) -> None:
        key = self.prefix + f"{0x1000 + self.n:x}".encode()
        self.n += 1
        await self.etcd.put(key, b"value-" + key[-4:])
        self.keys.append(key)

    async def start(self, endpoints: Sequence[str], impls: Sequence[str]) -> None:
        await self.etcd.clear(self.name)
        await self.add_key()
        await self.add_key()
        for impl in impls:
            proc = Proc(observe_argv(impl, endpoints, self.name), f"{impl}-observe")
            self.procs[impl] = proc
            await proc.wait_line(self.keys[0].__eq__, timeout=30)

    async def trial(self) -> dict[str, float]:
        new = self.keys[1]
        starts = {impl: len(p.lines) for impl, p in self.procs.items()}
        t0 = time.monotonic()
        await self.etcd.delete(self.keys[0])
        out: dict[str, float] = {}
        for impl, p in self.procs.items():
            t1, _, _ = await p.wait_line(lambda line: line == new, starts[impl], timeout=30)
            out[impl] = t1 - t0
        self.keys.pop(0)
        await self.add_key()
        return out

    async def close(self) -> None:
        for p in self.procs.values():
            await p.stop()
        await self.etcd.clear(self.name)


def _py_spy() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def _function(frame: str) -> str:
    """``name (file.py:line)`` -> ``name (file.py)``: lines of one function add up."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize_profile(path: str, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's raw (collapsed) stacks, shares of the busy samples: ``self`` by the
    function on top of the stack, ``inclusive`` by gee-h and gRPC functions anywhere on it."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit() or not stack:
                continue
            n = int(count)
            total += n
            frames = [_function(fr) for fr in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                if ("geeh/" in frame and "geeh/cli/__" not in frame) or "grpc" in frame:
                    inclusive[frame] += n
    if not total:
        return {}
    return {
        "samples": [("busy samples", float(total))],
        "self": [(fr, n / total) for fr, n in own.most_common(top)],
        "inclusive": [(fr, n / total) for fr, n in inclusive.most_common(top)],
    }


def _start_spy(binary: str, pid: int, raw: str) -> subprocess.Popen[bytes]:
    argv = [binary, "record", "--format", "raw", "--rate", "1000", "--nonblocking"]
    return subprocess.Popen(
        [*argv, "--pid", str(pid), "--output", raw],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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


async def run(cfg: Config, endpoints: list[str], etcd: Etcd) -> dict[str, Any]:
    rounds = cfg.n(80, 20)
    series = {
        (mode, impl): Series(f"{impl} ({mode})")
        for mode in (CONCURRENT, SEQUENTIAL)
        for impl in (GEEH, ETCDCTL)
    }
    pair = Election("bench-concurrent", etcd)
    alone = {impl: Election(f"bench-alone-{impl}", etcd) for impl in (GEEH, ETCDCTL)}
    profile: dict[str, list[tuple[str, float]]] = {}
    spy: subprocess.Popen[bytes] | None = None
    raw = os.path.join(tempfile.gettempdir(), "geeh-bench-concurrent.pyspy")
    try:
        await pair.start(endpoints, (GEEH, ETCDCTL))
        for impl, e in alone.items():
            await e.start(endpoints, (impl,))
        await asyncio.sleep(0.5)
        steps = [CONCURRENT, GEEH, ETCDCTL]
        for k in range(rounds):
            shift = k % len(steps)
            for step in steps[shift:] + steps[:shift]:
                await asyncio.sleep(SETTLE)
                try:
                    if step == CONCURRENT:
                        got = await pair.trial()
                        for impl, value in got.items():
                            series[(CONCURRENT, impl)].add(value)
                    else:
                        got = await alone[step].trial()
                        series[(SEQUENTIAL, step)].add(got[step])
                except (TimeoutError, RuntimeError) as err:
                    print(f"    concurrent observers, {step} trial failed: {err}")
        # Profiled apart, after the timed trials: the sampler takes CPU from the same 2 cores.
        binary = _py_spy()
        if binary is not None:
            spy = _start_spy(binary, pair.procs[GEEH].pid, raw)
            await asyncio.sleep(1.0)
            for _ in range(rounds * 3):
                await asyncio.sleep(SETTLE)
                with contextlib.suppress(TimeoutError, RuntimeError):
                    await pair.trial()
        if spy is not None:
            profile = await asyncio.to_thread(_finish_spy, spy, raw, cfg.out_dir)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        await pair.close()
        for e in alone.values():
            await e.close()
    return {"series": series, "profile": profile, "profiled": spy is not None}

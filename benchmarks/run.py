"""The benchmark driver: starts etcd, runs every benchmark, writes BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import pickle
import tempfile
import time
import traceback
from typing import Any

import geeh
from geeh.testing import LocalEtcdCluster

from . import (
    concurrent,
    cost,
    crash,
    findings,
    fleet,
    handoff,
    observers,
    profiling,
    report,
    scale,
    shards,
    switch,
)
from .common import REPO, Config, Etcd, geeh_cli, kill_all, machine

# The measurements of the last run, for --report-only (outside the repository).
DATA = os.path.join(tempfile.gettempdir(), "geeh-benchmarks-last-run.pickle")

STAGES = [
    "handoff",
    "inproc",
    "observers",
    "crash",
    "scale",
    "switch",
    "profile",
    "cost",
    "concurrent",
    "fleet",
    "shards",
]


async def _stage(data: dict[str, Any], key: str, label: str, coro: Any) -> None:
    print(f"  {label} ...", flush=True)
    data.setdefault("stages_run", []).append(label)
    t0 = time.monotonic()
    try:
        data[key] = await coro
    except Exception as err:  # a failed stage is reported, the others still run
        traceback.print_exc()
        data.setdefault("errors", []).append(f"{label}: {type(err).__name__}: {err}")
    print(f"  {label}: {time.monotonic() - t0:.0f} s", flush=True)


async def _on_cluster(cfg: Config, members: int, only: set[str], data: dict[str, Any]) -> None:
    tag = f"{members}-member"
    print(f"starting a {tag} etcd", flush=True)
    cluster = LocalEtcdCluster(members)
    await asyncio.to_thread(cluster.start)
    try:
        endpoints = cluster.endpoints
        async with geeh.Client(endpoints) as client:
            etcd = Etcd(client)
            if "handoff" in only:
                await _stage(
                    data,
                    f"handoff-process-{tag}",
                    f"hand-off, processes, {tag}",
                    handoff.process_level(cfg, endpoints, etcd),
                )
            if "inproc" in only:
                await _stage(
                    data,
                    f"handoff-inproc-{tag}",
                    f"hand-off, in-process, {tag}",
                    handoff.in_process(cfg, endpoints, etcd),
                )
            if "observers" in only:
                await _stage(
                    data,
                    f"observers-{tag}",
                    f"observers, {tag}",
                    observers.run(cfg, endpoints, etcd),
                )
            if members > 1 and "scale" in only:
                await _stage(
                    data,
                    f"scale-{tag}",
                    f"scale, {tag}",
                    scale.run_cluster(cfg, endpoints, etcd),
                )
            if members > 1 and "profile" in only:
                await _stage(
                    data,
                    "profiles-3-member",
                    f"profiles, {tag}",
                    profiling.run_cluster(cfg, endpoints, etcd),
                )
            if members > 1 and "switch" in only:
                await _stage(data, "switch", "member switch", switch.run(cfg, endpoints, etcd))
            if members == 1:
                if "concurrent" in only:
                    await _stage(
                        data,
                        "concurrent",
                        "observers side by side",
                        concurrent.run(cfg, endpoints, etcd),
                    )
                if "crash" in only:
                    await _stage(data, "crash", "crash failover", crash.run(cfg, endpoints, etcd))
                if "scale" in only:
                    await _stage(data, "scale", "scale", scale.run(cfg, endpoints, etcd))
                if "profile" in only:
                    await _stage(data, "profiles", "profiles", profiling.run(cfg, endpoints, etcd))
                    await _stage(data, "reads", "wait-read cost", profiling.read_cost(cfg, etcd))
    finally:
        kill_all()
        await asyncio.to_thread(cluster.close)


async def _main(cfg: Config, only: set[str], data: dict[str, Any]) -> None:
    try:
        await _on_cluster(cfg, 1, only, data)
        if only & {"handoff", "inproc", "observers", "scale", "switch", "profile"}:
            await _on_cluster(cfg, 3, only, data)
        if "cost" in only:
            await _stage(data, "cost", "idle cost", cost.run(cfg))
        if "fleet" in only:
            await _stage(data, "fleet", "observer fleets", fleet.run(cfg))
        if "shards" in only:
            await _stage(data, "shards", "shard leadership", shards.run(cfg))
    finally:
        kill_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="gee-h benchmarks against etcdctl elect; writes BENCHMARKS.md and plots",
    )
    parser.add_argument("--quick", action="store_true", help="fewer trials: about 2.5 minutes")
    parser.add_argument(
        "--out", default=os.path.join(REPO, "BENCHMARKS.md"), help="report path (BENCHMARKS.md)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=STAGES, default=STAGES, help="run only these stages"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"rewrite the report from the last run's measurements ({DATA})",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="fold the stages run now into the last run's measurements and report both",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        with open(DATA, "rb") as f:
            saved: dict[str, Any] = pickle.load(f)
        _write(args.out, saved)
        return 0
    cfg = Config(quick=args.quick)
    data: dict[str, Any] = {
        "config": cfg,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    geeh_cli()
    data["machine"] = machine()
    t0 = time.monotonic()
    try:
        asyncio.run(_main(cfg, set(args.only), data))
    except KeyboardInterrupt:
        kill_all()
        print("interrupted; writing what was measured")
    data["elapsed"] = time.monotonic() - t0
    data["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.merge:
        data = _merged(data)
    with contextlib.suppress(Exception), open(DATA, "wb") as f:
        pickle.dump(data, f)
    _write(args.out, data)
    return 0


def _merged(new: dict[str, Any]) -> dict[str, Any]:
    """The last run's measurements with this run's stages in place of theirs."""
    with open(DATA, "rb") as f:
        old: dict[str, Any] = pickle.load(f)
    labels = set(new.get("stages_run", []))
    errors = [e for e in old.get("errors", []) if e.split(":", 1)[0] not in labels]
    errors += new.get("errors", [])
    keep = ("config", "date", "machine", "elapsed", "load_end", "stages_run", "errors")
    old.update({k: v for k, v in new.items() if k not in keep})
    old["errors"] = errors
    old.setdefault("merged", []).append(
        f"{', '.join(new.get('stages_run', []))} (run again on {new['date']}, "
        f"{new['elapsed']:.0f} s)"
    )
    return old


def _write(out: str, data: dict[str, Any]) -> None:
    data["findings"] = findings.findings(data)
    data["notes"] = findings.notes(data)
    report.write(out, data)
    print(f"wrote {out} ({data['elapsed']:.0f} s of measurements)")

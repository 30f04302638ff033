"""The runner: starts etcd, runs the stages, saves their results as JSON, writes the report.

A stage is one entry of ``STAGES``: an async function that measures and returns its results
(Series, dataclasses, dicts and lists: ``common.jsonable`` turns them into JSON). A stage with
``clusters`` runs once on each size of etcd cluster the runner starts, as
``run(cfg, endpoints, etcd)``, and its JSON section is keyed ``"1-member"``, ``"3-member"``;
one without starts what it needs itself, as ``run(cfg)``, and its section is what it returned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import geeh
from geeh.testing import find_etcd, find_etcdctl

from . import cost, handoff, imports, observers, profiling, report, scale, shards, switch
from .common import REPO, RESULTS, Config, Etcd, jsonable, kill_all, local_etcd
from .render import TemplateError


class Stage(NamedTuple):
    run: Callable[..., Awaitable[Any]]
    clusters: tuple[int, ...] = ()  # () = the stage starts its own etcd


STAGES: dict[str, Stage] = {
    "handoff": Stage(handoff.process_level, (1, 3)),
    "inproc": Stage(handoff.in_process, (1, 3)),
    "observers": Stage(observers.run, (1, 3)),
    "concurrent": Stage(observers.side_by_side, (1,)),
    "crash": Stage(handoff.crash, (1,)),
    "scale": Stage(scale.run, (1, 3)),
    "switch": Stage(switch.run, (3,)),
    "profile": Stage(profiling.run, (1, 3)),
    "cost": Stage(cost.run),
    "fleet": Stage(cost.fleet),
    "shards": Stage(shards.run),
    "imports": Stage(imports.run),
}
RESULTS_JSON = os.path.join(RESULTS, "results.json")
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.md.tmpl")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _first_line(argv: list[str]) -> str:
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


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    import grpc

    rev = _first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    changed = _first_line(["git", "-C", REPO, "status", "--porcelain", "--", "src"])
    rev += " + uncommitted changes in src/" if changed not in ("", "unknown") else ""
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
        "load average at start": _load(),
    }


async def _stage(data: dict[str, Any], name: str, tag: str, coro: Awaitable[Any]) -> None:
    """Run one stage (on the cluster ``tag``, or "" on its own); a failure is recorded and
    the other stages still run."""
    label = f"{name}, {tag}" if tag else name
    print(f"  {label} ...", flush=True)
    t0 = time.monotonic()
    try:
        result = jsonable(await coro)
    except Exception as err:
        traceback.print_exc()
        data["meta"]["errors"][name] = f"{label}: {type(err).__name__}: {err}"
        result = None
    seconds = time.monotonic() - t0
    print(f"  {label}: {seconds:.0f} s", flush=True)
    if result is not None and tag:
        data.setdefault(name, {})[tag] = result
    elif result is not None:
        data[name] = result
    info = data["meta"]["stages"].setdefault(name, {"date": _now(), "seconds": 0.0})
    info["seconds"] += seconds


async def _measure(cfg: Config, only: list[str], data: dict[str, Any]) -> None:
    try:
        for members in (1, 3):
            names = [n for n in only if members in STAGES[n].clusters]
            if not names:
                continue
            tag = f"{members}-member"
            print(f"starting a {tag} etcd", flush=True)
            async with local_etcd(members) as cluster, geeh.Client(cluster.endpoints) as client:
                try:
                    for name in names:
                        coro = STAGES[name].run(cfg, cluster.endpoints, Etcd(client))
                        await _stage(data, name, tag, coro)
                finally:
                    kill_all()
        for name in only:
            if not STAGES[name].clusters:
                await _stage(data, name, "", STAGES[name].run(cfg))
    finally:
        kill_all()


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The saved results with the stages run now in place of theirs."""
    meta, run = old["meta"], new["meta"]
    for name in run["stages"]:
        old.pop(name, None)
        meta["errors"].pop(name, None)
    old.update({k: v for k, v in new.items() if k != "meta"})
    meta["errors"].update(run["errors"])
    meta["stages"].update(run["stages"])
    meta["merged"].append(
        f"{', '.join(run['stages'])} (run again on {run['date']}"
        f"{', quick' if run['quick'] else ''}, {run['elapsed']:.0f} s)"
    )
    return old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="gee-h benchmarks against etcdctl elect: results as JSON, plots, report",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="fewer trials: a few minutes")
    add("--only", nargs="+", choices=list(STAGES), metavar="STAGE", help=", ".join(STAGES))
    add("--merge", action="store_true", help="fold into the saved results")
    add("--report-only", action="store_true", help="measure nothing: render the saved results")
    add("--results", default=RESULTS_JSON, help="results JSON (plots beside)")
    add("--template", default=TEMPLATE, help="report template")
    add("--out", default=os.path.join(REPO, "BENCHMARKS.md"), help="report")
    args = parser.parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(args.results))
    if not args.report_only:
        meta = {"date": _now(), "quick": args.quick, "machine": machine()}
        data: dict[str, Any] = {"meta": {**meta, "errors": {}, "stages": {}, "merged": []}}
        t0 = time.monotonic()
        try:
            asyncio.run(_measure(Config(args.quick, out_dir), args.only or list(STAGES), data))
        except KeyboardInterrupt:
            kill_all()
            print("interrupted; saving what was measured")
        data["meta"].update(elapsed=time.monotonic() - t0, load_end=_load())
        if args.merge and os.path.exists(args.results):
            with open(args.results) as f:
                data = _merged(json.load(f), data)
        os.makedirs(out_dir, exist_ok=True)
        with open(args.results, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(f"wrote {args.results}")
    if not os.path.exists(args.results):
        parser.error(f"no saved results at {args.results}: measure first")
    with open(args.results) as f:
        data = json.load(f)
    try:
        report.write(data, args.template, args.out, out_dir)
    except TemplateError as err:  # the results are saved: fix the template, then --report-only
        print(f"python -m benchmarks: {args.template}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0

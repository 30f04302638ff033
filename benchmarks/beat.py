"""Celery beat HA side by side: gee-h's scheduler on etcd against celery-redbeat on Redis.

``python -m benchmarks.beat [--seconds-per-fault S] [--ttl 6] [--out PATH]``

Both run 3 beat replicas of the same app (benchmarks/beat_app.py: one entry every second,
kombu's filesystem transport as the broker) through the same faults of the replica that
sends, at the same TTL (gee-h) and lock timeout (redbeat):

- ``kill``: SIGKILL;
- ``stop``: SIGSTOP for 2 x TTL, then SIGCONT;
- ``cut``: its proxies to the coordinator (etcd, or Redis) drop every byte for 2 x TTL;
- ``term``: a graceful stop (SIGTERM);
- ``pause``: a pause (SIGSTOP, 2 x TTL) injected between the claim (redbeat: the lock
  extension) and the send, by the app's test hook.

Everything is counted from what reached the broker, per tick: messages less than half an
interval after the one before (sent twice), ticks without a message (missed), the longest
gap; and the replicas still running after each fault (a killed or stopped one is not counted
as lost; a supervisor restarts it before the next fault). Results go to
benchmarks/results/beat.json and a Markdown section to benchmarks/results/beat.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from geeh.testing import LocalEtcdCluster

from .beat_harness import (
    GEEH_SCHEDULER,
    REDBEAT_SCHEDULER,
    Beats,
    RedisServer,
    Replica,
    count,
    geeh_env,
    redis_env,
    wait_for,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
INTERVAL = 1.0
FAULTS = ("kill", "stop", "cut", "term", "pause")


def _targets(endpoints: Sequence[str]) -> list[tuple[str, int]]:
    return [(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in endpoints]


def run_faults(
    beats: Beats, ttl: int, settle: float, warmup: float, rounds: int = 1
) -> dict[str, Any]:
    """The scenario: a steady start, then each fault of the replica that sends, in turn."""
    beats.start_all()
    wait_for(lambda: len(beats.messages()) >= 3, 60, "the first ticks")
    start = beats.messages()[0].at
    time.sleep(warmup)
    phases: list[dict[str, Any]] = []
    for round_, fault in [(r, f) for r in range(rounds) for f in FAULTS]:
        leader = beats.leader(time.time() - 2 * INTERVAL)
        at = time.time()
        victim = _inject(beats, fault, leader, ttl)
        time.sleep(settle)
        end = time.time()
        gone = fault in ("kill", "term")  # the victim stops by design
        crashed = [
            r.index for r in beats.replicas if not r.running() and not (gone and r is victim)
        ]
        counts = count(beats.messages(), INTERVAL, at - 1.5 * INTERVAL, end)
        phase = {
            "round": round_,
            "fault": fault,
            **dataclasses.asdict(counts),
            "running_after": beats.running(),
            "expected_running": len(beats.replicas) - gone,
            "crashed": crashed,
        }
        print(f"  {beats.scheduler} {fault}: {phase}", file=sys.stderr)
        phases.append(phase)
        beats.restart_stopped()
        wait_for(lambda: beats.running() == len(beats.replicas), 30, "the replicas to run")
        time.sleep(2 * INTERVAL)
    end = time.time()
    total = count(beats.messages(), INTERVAL, start, end)
    return {
        "scheduler": beats.scheduler,
        "seconds": round(end - start, 1),
        "total": dataclasses.asdict(total),
        "phases": phases,
        "running_at_end": beats.running(),
        "exit_codes": {r.index: r.exits for r in beats.replicas},
    }


def _inject(beats: Beats, fault: str, leader: Replica, ttl: int) -> Replica:
    if fault == "kill":
        beats.signal(leader, signal.SIGKILL)
    elif fault == "term":
        beats.signal(leader, signal.SIGTERM)
    elif fault == "stop":
        beats.signal(leader, signal.SIGSTOP)
        time.sleep(2 * ttl)
        beats.signal(leader, signal.SIGCONT)
    elif fault == "cut":
        beats.cut(leader)
        time.sleep(2 * ttl)
        beats.heal(leader)
    elif fault == "pause":
        trigger = os.path.join(beats.broker_dir, "..", "pause")
        open(trigger, "w").close()  # the app's hook takes it at the next send
        taken = wait_for(lambda: _taken(trigger, beats), 30, "a beat to take the pause")
        assert isinstance(taken, Replica)
        leader = taken
        time.sleep(2 * ttl)
        beats.signal(leader, signal.SIGCONT)
    return leader


def _taken(trigger: str, beats: Beats) -> Replica | None:
    for replica in beats.replicas:
        if replica.running() and os.path.exists(f"{trigger}.{replica.pid}"):
            return replica
    return None


def run_geeh(ttl: int, settle: float, warmup: float, rounds: int, work: str) -> dict[str, Any]:
    with LocalEtcdCluster(3) as cluster:
        env = _env(ttl, work)
        beats = Beats(GEEH_SCHEDULER, 3, _targets(cluster.endpoints), geeh_env, env, work)
        try:
            return run_faults(beats, ttl, settle, warmup, rounds)
        finally:
            beats.close()


def run_redbeat(ttl: int, settle: float, warmup: float, rounds: int, work: str) -> dict[str, Any]:
    redis = RedisServer()
    try:
        env = _env(ttl, work)
        beats = Beats(REDBEAT_SCHEDULER, 3, [("127.0.0.1", redis.port)], redis_env, env, work)
        try:
            return run_faults(beats, ttl, settle, warmup, rounds)
        finally:
            beats.close()
    finally:
        redis.close()


def _env(ttl: int, work: str) -> dict[str, str]:
    return {
        "BEAT_INTERVAL": str(INTERVAL),
        "BEAT_LOCK_TIMEOUT": str(ttl),
        "BEAT_PAUSE_FILE": os.path.join(work, "pause"),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("celery", "kombu", "celery-redbeat", "redis", "gee-h"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            found[package] = version(package)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout
        found["redis-server"] = out.split()[2].removeprefix("v=")
    return found


def goals(run: dict[str, Any], ttl: int) -> str:
    """The issue's goals for gee-h, checked on one run (reported for both)."""
    phases = run["phases"]
    checks = {
        "no tick sent twice": all(p["twice"] == 0 for p in phases),
        "no replica exits unasked": all(not p["crashed"] for p in phases),
        "a graceful stop loses no tick": all(
            p["missed"] == 0 for p in phases if p["fault"] == "term"
        ),
        f"kill gap <= TTL + interval ({ttl + INTERVAL:g} s)": all(
            p["longest_gap"] <= ttl + INTERVAL for p in phases if p["fault"] == "kill"
        ),
    }
    return "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks.items())


def markdown(results: dict[str, Any]) -> str:
    ttl = results["ttl"]
    lines = [
        "## Celery beat: gee-h against celery-redbeat",
        "",
        f"3 beat replicas each, one entry every {INTERVAL:g} s, TTL / lock timeout {ttl} s, "
        f"kombu's filesystem broker; gee-h on a 3-member etcd, redbeat on redis-server "
        f"{results['versions'].get('redis-server', '?')} (celery "
        f"{results['versions'].get('celery', '?')}, celery-redbeat "
        f"{results['versions'].get('celery-redbeat', '?')}). Counted per tick from the "
        f"broker; each fault made {results.get('rounds', 1)} time(s), one figure per round; "
        "`python -m benchmarks.beat` (`make bench-beat`).",
        "",
        "| fault | scheduler | sent twice | missed | longest gap (s) | running after |",
        "|---|---|---|---|---|---|",
    ]
    names = {GEEH_SCHEDULER: "gee-h", REDBEAT_SCHEDULER: "redbeat"}
    runs = results["runs"]
    for fault in FAULTS:
        for run in runs:
            phases = [p for p in run["phases"] if p["fault"] == fault]
            twice = " / ".join(str(p["twice"]) for p in phases)
            missed = " / ".join(str(p["missed"]) for p in phases)
            gaps = " / ".join(f"{p['longest_gap']:.2f}" for p in phases)
            running = " / ".join(f"{p['running_after']} of {p['expected_running']}" for p in phases)
            lines.append(
                f"| {fault} | {names[run['scheduler']]} | {twice} | {missed} | {gaps} | {running} |"
            )
    lines.append("")
    for run in runs:
        total = run["total"]
        crashes = sum(len(p["crashed"]) for p in run["phases"])
        lines.append(
            f"- {names[run['scheduler']]}: {run['seconds']:.0f} s, {total['sent']} ticks sent, "
            f"{total['twice']} sent twice, {total['missed']} missed; replicas that exited "
            f"unasked (restarted after): {crashes}; running at the end: "
            f"{run['running_at_end']}. Goals: {goals(run, ttl)}."
        )
    lines += [
        "",
        "`kill` and `term` stop a replica by design (running after: 2 of 2 expected); after "
        "`stop`, `cut` and `pause` all 3 should still run. The `pause` is injected between the "
        "claim (redbeat: its lock extension) and the send. A replica that exited is started "
        "again before the next fault, as a supervisor would.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.beat", description=__doc__)
    parser.add_argument("--ttl", type=int, default=6, help="TTL and lock timeout (6)")
    parser.add_argument("--settle", type=float, default=None, help="seconds after each fault")
    parser.add_argument("--warmup", type=float, default=20.0, help="steady seconds first")
    parser.add_argument("--rounds", type=int, default=1, help="times each fault is made (1)")
    parser.add_argument("--only", choices=("geeh", "redbeat"), action="append")
    parser.add_argument("--out", default=RESULTS, help="directory for beat.json and beat.md")
    parser.add_argument(
        "--into",
        default=os.path.join(REPO, "BENCHMARKS.md"),
        help="put the Markdown section into this file, between its beat markers ('' : no)",
    )
    args = parser.parse_args(argv)
    settle = args.settle if args.settle is not None else 2.0 * args.ttl
    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "geeh": run_geeh,
        "redbeat": run_redbeat,
    }
    results: dict[str, Any] = {
        "ttl": args.ttl,
        "interval": INTERVAL,
        "rounds": args.rounds,
        "versions": versions(),
    }
    results["runs"] = []
    for name in args.only or list(runners):
        work = tempfile.mkdtemp(prefix=f"geeh-beat-{name}-")
        print(f"{name}: logs in {work}", file=sys.stderr)
        results["runs"].append(runners[name](args.ttl, settle, args.warmup, args.rounds, work))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "beat.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    with open(os.path.join(args.out, "beat.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown(results))
    if args.into:
        into(args.into, markdown(results))
    print(markdown(results))
    return 0


START, END = "<!-- beat: start -->", "<!-- beat: end -->"


def into(path: str, section: str) -> None:
    """Replace the text between the beat markers of ``path`` (or append it with them)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    block = f"{START}\n{section.rstrip()}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())

"""The checker: reads a run directory and counts the violations of each property.

1. register: etcd's history of the register key has non-decreasing tokens; every write a
   worker saw succeed is in it; every write in it was tried by some worker.
2. no stale action: no action (started after is_leader said yes) with token T starts after
   an action with a larger token has finished (one monotonic clock for all processes).
3. wins: each win's token is larger than every earlier win's, and was a leader in etcd.
4. observers: each observer's leaders strictly increase, each was a leader in etcd, and
   none that etcd's history shows is missing (no compaction happens during a run).
5. liveness: the longest time without a successful write, and whether faults explain it.
6. leftovers: no candidate key and no lease is left after the workers stop.
7. processes: no traceback in any process's output, no unexpected exit, clean stops.
8. process trees (``geeh run`` workers): two leaders' trees (CMD and its child, judged from
   their heartbeats) are never alive at the same instant; every write to the run register
   was made while its token led in etcd (no deposed tree writes), and was tried by a job.
9. rbac: while read on one election is revoked and restored (chaos/rbac.py), the observers of
   the lane's other elections, on the same client, see every leader, in order, each within
   LAG seconds; the observer of the revoked election ends with a permission error.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .history import Record, read
from .rbac import REVOKED

ELECTION_PREFIX = "chaos-election/"
REGISTER = "chaos-register"
RUN_PREFIX = "chaos-run/"
RUN_REGISTER = "chaos-run-register"
# A stretch without progress is a violation when no fault explains this much of it.
UNEXPLAINED = 2.0
# How late an observer of a permitted election may report a leader (rbac lane).
LAG = 5.0


@dataclass
class Result:
    name: str
    violations: int
    summary: str
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.violations += 1
        if len(self.examples) < 5:
            self.examples.append(example)


class RunFiles:
    def __init__(self, rundir: Path) -> None:
        self.dir = rundir
        self.options = json.loads((rundir / "run.json").read_text())
        self.ttl = int(self.options["ttl"])
        self.workers = {p.stem: read(p) for p in sorted(rundir.glob("w*.jsonl"))}
        self.observers = {p.stem: read(p) for p in sorted(rundir.glob("o*.jsonl"))}
        self.runners = {p.stem: read(p) for p in sorted(rundir.glob("r*.jsonl"))}
        faults = read(rundir / "faults.jsonl")
        self.faults = [r for r in faults if not r.get("skipped")]
        self.skipped = len(faults) - len(self.faults)
        self.controller = read(rundir / "controller.jsonl")
        self.etcd = read(rundir / "etcd.jsonl")
        self.leftovers = json.loads((rundir / "leftovers.json").read_text())
        phases = {r["name"]: r["t"] for r in self.controller if r["ev"] == "phase"}
        self.began = phases.get("faults", 0.0)
        self.stopped = phases.get("stop", float("inf"))

    def records(self, ev: str) -> list[Record]:
        return [dict(r, worker=w) for w, rs in self.workers.items() for r in rs if r["ev"] == ev]

    def at(self, t: float) -> str:
        return f"{t - self.began:.3f}s"

    def leaders(self, prefix: str = ELECTION_PREFIX) -> list[int | None]:
        """Every leader etcd had (by token; None: no leader), in revision order."""
        sequence: list[int | None] = [None]
        for _, leader in self.leader_changes(prefix):
            if leader != sequence[-1]:
                sequence.append(leader)
        return sequence

    def leader_changes(self, prefix: str) -> list[tuple[int, int | None]]:
        """(revision, leader's token from then on) at each revision that touched ``prefix``."""
        candidates: dict[str, int] = {}
        changes: list[tuple[int, int | None]] = []
        events = [e for e in self.etcd if e["key"].startswith(prefix)]
        for i, event in enumerate(events):
            if event["type"] == "put":
                candidates.setdefault(event["key"], event["create"])
            else:
                candidates.pop(event["key"], None)
            if i + 1 < len(events) and events[i + 1]["rev"] == event["rev"]:
                continue  # a leader is what a whole revision leaves behind
            changes.append((event["rev"], min(candidates.values(), default=None)))
        return changes


def _token(value: str) -> int:
    return int(value.split(":", 1)[0])


def register(run: RunFiles) -> Result:
    writes = [(e["rev"], e["value"]) for e in run.etcd if e["key"] == REGISTER]
    acts = run.records("act")
    acked = [a for a in acts if a["result"] == "ok"]
    unknown = sum(a["result"].startswith("unknown") for a in acts)
    rejected = sum(a["result"] == "rejected" for a in acts)
    result = Result(
        "1. register history",
        0,
        f"{len(writes)} writes in etcd, {len(acked)} acknowledged, {rejected} rejected by the "
        f"fence, {unknown} of unknown outcome",
    )
    highest = 0
    for rev, value in writes:
        if _token(value) < highest:
            result.add(f"rev {rev}: {value} after token {highest}")
        highest = max(highest, _token(value))
    by_rev = dict(writes)
    for act in acked:
        if by_rev.get(act["rev"]) != act["value"]:
            result.add(f"{act['worker']} saw {act['value']} succeed at rev {act['rev']}: absent")
    tried = {r["value"] for r in run.records("try")}
    for rev, value in writes:
        if value not in tried:
            result.add(f"rev {rev}: {value} was never tried by any worker")
    return result


def stale_actions(run: RunFiles) -> Result:
    tries = run.records("try")
    done = sorted((a["token"], a["end"]) for a in run.records("act") if a["result"] == "ok")
    tokens = [token for token, _ in done]
    # earliest[i]: the earliest end of an acknowledged action with token >= tokens[i].
    earliest = [end for _, end in done]
    for i in range(len(earliest) - 2, -1, -1):
        earliest[i] = min(earliest[i], earliest[i + 1])
    result = Result("2. no stale action", 0, f"{len(tries)} actions, {len(done)} acknowledged")
    for act in tries:
        i = bisect.bisect_right(tokens, act["token"])
        if i < len(done) and act["t"] > earliest[i]:
            result.add(
                f"{act['worker']} token {act['token']} started at {run.at(act['t'])}, after an "
                f"action with a larger token ended at {run.at(earliest[i])}{_thawed(run, act['t'])}"
            )
    return result


def _thawed(run: RunFiles, t: float) -> str:
    """A hint: a raft leader frozen past the TTL revokes live leases when it resumes (an etcd
    bug, etcd-io/etcd#15247); their holders keep ``is_leader`` until the deletion reaches them.
    """
    for f in run.faults:
        thawed_leader = f["kind"] == "stop-member" and "raft leader" in f["target"]
        if thawed_leader and 0 <= t - f["end"] < 2.0:
            return f" ({f['target']} resumed {t - f['end']:.2f}s before: etcd-io/etcd#15247?)"
    return ""


def wins(run: RunFiles) -> Result:
    every = run.records("win")
    valid = sorted((w for w in every if w["valid"]), key=lambda w: w["t"])
    leaders = set(run.leaders())
    result = Result(
        "3. wins increase",
        0,
        f"{len(valid)} wins ({len(every) - len(valid)} more already lost when first checked)",
    )
    highest = 0
    for win in valid:
        if win["token"] <= highest:
            result.add(
                f"{win['worker']} won token {win['token']} at {run.at(win['t'])} after token "
                f"{highest} had won{_thawed(run, win['t'])}"
            )
        if win["token"] not in leaders:
            result.add(f"{win['worker']} won token {win['token']}, never a leader in etcd")
        highest = max(highest, win["token"])
    return result


def observers(run: RunFiles) -> Result:
    truth = run.leaders()
    result = Result("4. observers", 0, f"etcd had {sum(t is not None for t in truth)} leaders")
    for name, records in run.observers.items():
        reports: list[int | None] = []
        for r in records:
            if r["ev"] == "leader" and (not reports or reports[-1] != r["token"]):
                reports.append(r["token"])
        highest, pos = 0, 0
        for token in reports:
            if token is not None and token <= highest:
                result.add(f"{name} reported token {token} after token {highest}")
            highest = max(highest, token or 0)
            try:
                found = truth.index(token, pos)
            except ValueError:
                result.add(f"{name} reported leader {token}: not next in etcd's history")
                continue
            for missed in truth[pos:found]:
                result.add(f"{name} missed leader {missed}")
            pos = found + 1
        for missed in truth[pos:]:
            result.add(f"{name} missed leader {missed} (at the end)")
        result.summary += f"; {name} reported {len(reports)} changes"
    return result


def liveness(run: RunFiles) -> Result:
    ends = sorted(a["end"] for a in run.records("act") if a["result"] == "ok")
    marks = [run.began, *(t for t in ends if run.began <= t <= run.stopped), run.stopped]
    gaps = sorted(((b - a, a, b) for a, b in itertools.pairwise(marks)), reverse=True)
    allowance = 2 * run.ttl + 5  # recovery after a fault: lease expiry, etcd elections
    windows = sorted(
        (f["start"] - 0.5, f["end"] + allowance)
        for f in run.faults
        if f.get("lane") != "rbac"  # an etcd of its own: it explains nothing here
    )
    result = Result("5. liveness", 0, "no successful write at all")
    for length, a, b in gaps:
        uncovered, cursor = 0.0, a
        for start, end in windows:
            if start > cursor:
                uncovered += max(0.0, min(start, b) - cursor)
            cursor = max(cursor, end)
            if cursor >= b:
                break
        uncovered += max(0.0, b - cursor)
        if uncovered > UNEXPLAINED:
            result.add(
                f"{length:.1f}s without a write from {run.at(a)}: {uncovered:.1f}s of it "
                "with no fault to explain it"
            )
    if gaps:
        length, a, b = gaps[0]
        during = sorted({f["kind"] for f in run.faults if f["start"] < b and f["end"] > a - 1})
        result.summary = (
            f"longest time without a successful write {length:.2f}s (from {run.at(a)}), "
            f"during: {', '.join(during) or 'no fault'}"
        )
    return result


def leftovers(run: RunFiles) -> Result:
    keys, leases = run.leftovers["keys"], run.leftovers["leases"]
    result = Result("6. nothing left", 0, f"{len(keys)} keys, {len(leases)} leases left")
    for key in keys:
        result.add(f"key {key}")
    for lease, ttl in leases.items():
        result.add(f"lease {int(lease):x} (TTL left {ttl}s)")
    return result


def processes(run: RunFiles) -> Result:
    result = Result("7. processes", 0, "tracebacks in output, unexpected exits, unclean stops")
    for path in sorted(run.dir.glob("*.stderr")):
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                last = next((x for x in lines[i + 1 :] if re.match(r"\S", x)), "?")
                result.add(f"{path.name}: {last}")
    for r in run.controller:
        if r["ev"] in ("unexpected-exit", "unclean-stop"):
            result.add(f"{r['proc']}: {r['ev']} {r.get('code', r.get('what'))}")
    return result


def process_trees(run: RunFiles) -> Result:
    """Leaders' process trees never overlap in time; no write from a deposed tree lands."""
    lives: dict[int, list[float]] = {}  # token: [first beat, last beat]
    owner: dict[int, str] = {}
    children: set[int] = set()
    for name, records in run.runners.items():
        for r in records:
            if r["ev"] != "beat":
                continue
            life = lives.setdefault(r["token"], [r["t"], r["t"]])
            life[0], life[1] = min(life[0], r["t"]), max(life[1], r["t"])
            owner[r["token"]] = name
            if r["role"] == "child":
                children.add(r["token"])
    writes = [(e["rev"], e["value"]) for e in run.etcd if e["key"] == RUN_REGISTER]
    acts = [r for rs in run.runners.values() for r in rs if r["ev"] == "act"]
    acked = sum(a["result"] == "ok" for a in acts)
    rejected = sum(a["result"] == "rejected" for a in acts)
    result = Result(
        "8. process trees",
        0,
        f"{len(lives)} trees of `geeh run` ({len(children)} with a child beating); "
        f"{len(writes)} fenced writes in etcd, {acked} acknowledged, {rejected} rejected",
    )
    latest: tuple[float, int] | None = None  # the last beat so far of any earlier tree
    for token, (first, last) in sorted(lives.items(), key=lambda item: item[1][0]):
        if latest is not None and first <= latest[0]:
            result.add(
                f"{owner[token]} tree {token} beat at {run.at(first)} while tree {latest[1]} "
                f"({owner[latest[1]]}) beat until {run.at(latest[0])}"
            )
        if latest is None or last > latest[0]:
            latest = (last, token)
    changes = run.leader_changes(RUN_PREFIX)
    revisions = [rev for rev, _ in changes]
    for rev, value in writes:
        i = bisect.bisect_right(revisions, rev) - 1
        leader = changes[i][1] if i >= 0 else None
        if leader != _token(value):
            result.add(f"rev {rev}: {value} written while token {leader} led (a deposed tree)")
    tried = {r["value"] for rs in run.runners.values() for r in rs if r["ev"] == "try"}
    for rev, value in writes:
        if value not in tried:
            result.add(f"rev {rev}: {value} was never tried by any job")
    return result


def rbac(run: RunFiles) -> Result:
    records = read(run.dir / "rbac.jsonl")
    result = Result("9. rbac", 0, "no rbac lane in this run")
    if not records:
        return result
    revocations = [f for f in run.faults if f["kind"] == "revoke-read"]
    writes = [r for r in records if r["ev"] == "wrote"]
    result.summary = f"{len(revocations)} revocations, {len(writes)} leaders written"
    for election in sorted({w["election"] for w in writes} - {REVOKED}):
        seen = [
            r
            for r in records
            if r["ev"] == "leader" and r["election"] == election and r["value"] is not None
        ]
        pos = 0
        for w in (w for w in writes if w["election"] == election):
            found = next((i for i in range(pos, len(seen)) if seen[i]["value"] == w["value"]), None)
            if found is None:
                result.add(f"{election}: leader {w['value']} (at {run.at(w['t'])}) never observed")
                continue
            late = seen[found]["t"] - w["t"]
            if late > LAG:
                result.add(f"{election}: leader {w['value']} observed {late:.1f}s late")
            pos = found + 1
    refusals = [r["t"] for r in records if r["ev"] == "refused" and r["election"] == REVOKED]
    for f in revocations:
        if not any(f["start"] <= t <= f["end"] + 1.0 for t in refusals):
            result.add(
                f"{REVOKED}: no permission error while read was revoked at {run.at(f['start'])}"
            )
    return result


def check(rundir: Path) -> tuple[list[Result], str]:
    """Every property's result, and a summary of the faults injected."""
    run = RunFiles(rundir)
    kinds = Counter(f["kind"] for f in run.faults)
    faults = f"{len(run.faults)} faults: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    if run.skipped:
        faults += f" ({run.skipped} skipped: no leader to act on)"
    properties = (
        register,
        stale_actions,
        wins,
        observers,
        liveness,
        leftovers,
        processes,
        process_trees,
        rbac,
    )
    return [prop(run) for prop in properties], faults


def report(rundir: Path) -> int:
    """Print the check of a run; 0 if every property holds, else 1."""
    results, faults = check(rundir)
    print(faults)
    for r in results:
        print(f"{r.name}: {r.violations} violations ({r.summary})")
        for example in r.examples:
            print(f"    {example}")
    return 0 if all(r.violations == 0 for r in results) else 1

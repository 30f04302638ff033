"""The checker of a sharded chaos run (chaos/sharded.py): the violations of each property.

1. registers: per shard, etcd's history of its register has non-decreasing tokens; every
   write a member saw succeed is in it; every write in it was tried by some member.
2. one holder at a time: per shard, no action with token T starts after an acknowledged
   action with a larger token has ended (one monotonic clock for all processes).
3. balance: after the last fault every shard has one owner and the shares are even, within
   TTL + 5 s.
4. leftovers: no key under the shards' name and no lease after the members stop.
5. processes: no traceback in any output, no unexpected exit, clean stops.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from pathlib import Path

from .checker import Result, leftovers, processes
from .history import Record, read

DATA = "chaos-shards-data/"
BALANCE_WITHIN = 5.0  # seconds past the TTL


class ShardRun:
    def __init__(self, rundir: Path) -> None:
        self.dir = rundir
        self.options = json.loads((rundir / "run.json").read_text())
        self.ttl = int(self.options["ttl"])
        self.members = {p.stem: read(p) for p in sorted(rundir.glob("s*.jsonl"))}
        faults = read(rundir / "faults.jsonl")
        self.faults = [r for r in faults if not r.get("skipped")]
        self.controller = read(rundir / "controller.jsonl")
        self.etcd = read(rundir / "etcd.jsonl")
        self.leftovers = json.loads((rundir / "leftovers.json").read_text())
        self.balance = json.loads((rundir / "balance.json").read_text())

    def records(self, ev: str) -> list[Record]:
        return [dict(r, member=m) for m, rs in self.members.items() for r in rs if r["ev"] == ev]


def _token(value: str) -> int:
    return int(value.split(":", 1)[0])


def registers(run: ShardRun) -> Result:
    writes: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for e in run.etcd:
        if e["key"].startswith(DATA) and e["type"] == "put":
            writes[int(e["key"][len(DATA) :])].append((e["rev"], e["value"]))
    acked = [a for a in run.records("act") if a["result"] == "ok"]
    total = sum(len(w) for w in writes.values())
    result = Result("1. registers", 0, f"{total} writes to {len(writes)} shards in etcd, "
                    f"{len(acked)} acknowledged")  # fmt: skip
    for shard, history in writes.items():
        highest = 0
        for rev, value in history:
            if _token(value) < highest:
                result.add(f"shard {shard} rev {rev}: {value} after token {highest}")
            highest = max(highest, _token(value))
    by_rev = {rev: value for history in writes.values() for rev, value in history}
    for act in acked:
        if by_rev.get(act["rev"]) != act["value"]:
            result.add(f"{act['member']} saw {act['value']} succeed at rev {act['rev']}: absent")
    tried = {r["value"] for r in run.records("try")}
    for shard, history in writes.items():
        for rev, value in history:
            if value not in tried:
                result.add(f"shard {shard} rev {rev}: {value} was never tried")
    return result


def one_holder(run: ShardRun) -> Result:
    tries = run.records("try")
    result = Result("2. one holder per shard at a time", 0, f"{len(tries)} actions")
    done_by_shard: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for a in run.records("act"):
        if a["result"] == "ok":
            done_by_shard[a["shard"]].append((a["token"], a["end"]))
    for shard, done in done_by_shard.items():
        done.sort()
        tokens = [t for t, _ in done]
        earliest = [end for _, end in done]
        for i in range(len(earliest) - 2, -1, -1):
            earliest[i] = min(earliest[i], earliest[i + 1])
        for act in (t for t in tries if t["shard"] == shard):
            i = bisect.bisect_right(tokens, act["token"])
            if i < len(done) and act["t"] > earliest[i]:
                result.add(f"shard {shard}: {act['member']} token {act['token']} acted after a "
                           f"holder with a larger token had acted")  # fmt: skip
    return result


def balance(run: ShardRun) -> Result:
    b = run.balance
    allowed = run.ttl + BALANCE_WITHIN
    result = Result("3. balanced after the last fault", 0, "")
    if b["balanced_at"] is None:
        result.add(f"not balanced after the last fault: shares {sorted(b['held'].values())}")
        result.summary = "never balanced"
        return result
    took = b["balanced_at"] - b["last_fault_end"]
    result.summary = (f"balanced {took:.2f}s after the last fault over {b['running']} members "
                      f"(allowed {allowed:g}s)")  # fmt: skip
    if took > allowed:
        result.add(f"took {took:.2f}s, more than TTL + {BALANCE_WITHIN:g}s")
    return result


def check(rundir: Path) -> tuple[list[Result], str]:
    run = ShardRun(rundir)
    kinds = Counter(f["kind"] for f in run.faults)
    faults = f"{len(run.faults)} faults: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    results = [registers(run), one_holder(run), balance(run)]
    results += [leftovers(run), processes(run)]  # type: ignore[arg-type]
    results[3].name, results[4].name = "4. nothing left", "5. processes"
    return results, faults


def report(rundir: Path) -> int:
    """Print the check of a sharded run; 0 if every property holds, else 1."""
    results, faults = check(rundir)
    print(faults)
    for r in results:
        print(f"{r.name}: {r.violations} violations ({r.summary})")
        for example in r.examples:
            print(f"    {example}")
    return 0 if all(r.violations == 0 for r in results) else 1

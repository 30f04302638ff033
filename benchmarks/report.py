"""BENCHMARKS.md from the saved results: tables from the data, prose from the template.

``TABLES`` maps a stage to a function that adds Markdown tables (and lists) to the stage's
JSON section before rendering, where the template reads them like any figure
(``{{ handoff.1-member.table }}``). They are not saved: the JSON holds measurements only.
"""

from __future__ import annotations

import copy
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from . import plots
from .common import ETCDCTL, GEEH, RESULTS
from .render import format_value as _f
from .render import render

S = dict[str, Any]  # a Series as saved: label, samples, n, median, p90, p99, max, ...
SCALE_GOAL = 1.5  # issue 5: at 1000 waiting, at most this times the 1-waiting figure
CLUSTERS = ("1-member", "3-member")
LATENCY = ("median", "p90", "p99", "max")

# Stages whose sections compare latencies on each cluster: the rows (key, label) of their
# tables and plots, and the key of the reference row.
COMPARED: dict[str, tuple[list[tuple[str, str]], str]] = {
    "handoff": ([(ETCDCTL, "`etcdctl elect` (reference)"), (GEEH, "`geeh elect`")], ETCDCTL),
    "inproc": (
        [
            ("floor", "floor: Delete + watch event (gee-h transport)"),
            ("floor-go", "floor: Delete + `etcdctl watch` prints"),
            ("resign", "gee-h `resign()` -> `campaign` returns"),
        ],
        "floor",
    ),
    "observers": (
        [
            (ETCDCTL, "`etcdctl elect -l` (reference)"),
            (GEEH, "`geeh elect --listen`"),
            ("in-process", "gee-h `observe()` in-process"),
            ("floor", "floor: Delete + raw gee-h watch event"),
        ],
        ETCDCTL,
    ),
}


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def _mean(values: Sequence[float]) -> float | None:
    return statistics.mean(values) if values else None


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _per_minute(counts: S, seconds: float, per: int = 1) -> str:
    return ", ".join(f"{k} {v * 60 / seconds / per:.1f}" for k, v in sorted(counts.items())) or "-"


def table(head: str, rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table. ``head`` is the header row with ``|``; a column whose header ends
    with ``>`` (stripped) is right-aligned."""
    cols = [c.strip() for c in head.split("|")]
    rule = ["---:" if c.endswith(">") else "---" for c in cols]
    lines = [[c.rstrip(">") for c in cols], rule, *[[str(c) for c in r] for r in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def stats(s: S) -> list[str]:
    """trials, median, p90, p99, max (ms)."""
    failed = f" ({s['failures']} failed)" if s["failures"] else ""
    return [f"{s['n']}{failed}", *(_f(s[k], "ms") for k in LATENCY)]


def comparison(rows: Sequence[tuple[str, S]], ref: S | None) -> str:
    """Latency rows (ms), with their ratios to the reference row if there is one."""
    head = " | trials> | median ms> | p90 ms> | p99 ms> | max ms>"
    if ref is None:
        return table(head, [[label, *stats(s)] for label, s in rows])
    ratios = [
        ["1 (reference)", "1"] if s is ref else [_ratio(s[k], ref[k]) for k in ("median", "p99")]
        for _, s in rows
    ]
    body = [[label, *stats(s), *r] for (label, s), r in zip(rows, ratios, strict=True)]
    return table(head + " | median ratio> | p99 ratio>", body)


def by_method(s: S) -> str:
    """etcd's unary requests per sample, by method."""
    methods = sorted({m for c in s["requests"] for m in c})
    mean = {m: statistics.mean(c.get(m, 0) for c in s["requests"]) for m in methods}
    return ", ".join(f"{m} {v:.2f}" for m, v in mean.items()) or "none"


# -- one function per stage: the tables its section gets ------------------------------------


def _compared(name: str) -> Callable[[S], None]:
    rows, ref = COMPARED[name]

    def derive(section: S) -> None:
        for c in section.values():
            c["table"] = comparison([(label, c[k]) for k, label in rows], c[ref])
            c["met"] = {k: _met(c[k]["median"] / c[ref]["median"] <= 1.0) for k, _ in rows}
            if name == "handoff":
                for impl in (ETCDCTL, GEEH):
                    c[impl]["by_method"] = by_method(c[impl])

    return derive


def _concurrent(section: S) -> None:
    c = section["1-member"]
    rows = []
    for mode, label in (("concurrent", "side by side"), ("sequential", "one at a time")):
        g, e = c["series"][f"{mode}-{GEEH}"], c["series"][f"{mode}-{ETCDCTL}"]
        c[mode] = {"ratio": g["median"] / e["median"], "p90_ratio": g["p90"] / e["p90"]}
        ms = [_f(s[k], "ms") for s in (g, e) for k in ("median", "p90", "p99")]
        rows.append([label, g["n"], *ms, f"{c[mode]['ratio']:.2f}", f"{c[mode]['p90_ratio']:.2f}"])
    c["table"] = table(
        "case | trials> | gee-h median ms> | p90> | p99> | `etcdctl elect -l` median ms> | p90> "
        "| p99> | median ratio> | p90 ratio>",
        rows,
    )
    p = c.get("profile")
    if p:
        p["busy_samples"] = int(p["samples"][0][1])
        own, inc = p["self"], p["inclusive"]

        def cells(xs: list[Any], i: int) -> list[str]:
            return [f"`{xs[i][0]}`", f"{xs[i][1]:.0%}"] if i < len(xs) else ["", ""]

        rows = [cells(own, i) + cells(inc, i) for i in range(max(len(own), len(inc)))]
        p["table"] = table("self | share> | inclusive | share>", rows)


def _crash(section: S) -> None:
    rows = []
    for t, s in sorted((int(ttl), s) for ttl, s in section["1-member"].items()):
        rows.append([f"{t} s", s["n"], *(_f(s[k], ".3f") for k in LATENCY)])
        s["met"] = _met(s["p99"] <= t + 0.6)
        rows[-1] += [f"{s['p99'] - t:+.3f}", s["met"]]
    head = "TTL> | trials> | median s> | p90 s> | p99 s> | max s> | p99 - TTL s> "
    section["1-member"]["table"] = table(head + "| goal: p99 <= TTL + 0.6 s", rows)


def _scale(section: S) -> None:
    results = [r for c in CLUSTERS for r in section.get(c, {}).get("results", [])]
    base = {(r["cluster"], r["processes"]): r for r in results if r["waiting"] == 1}
    rows, goals = [], []
    paths: dict[int, dict[str, list[float]]] = {}
    for r in results:
        b, lat = base[(r["cluster"], r["processes"])], r["latency"]
        lat_x = lat["median"] / b["latency"]["median"]
        req, req_x = _mean(r["unary"]), _ratio(_mean(r["unary"]), _mean(b["unary"]))
        rss = r["rss_per_candidate"]
        row = [r["cluster"], r["waiting"], r["processes"], *stats(lat)[:4], f"{lat_x:.2f}"]
        row += [f"{_f(req)} (max {max(r['unary'], default=0):.0f})", _f(_mean(r["watch_msgs"]))]
        row += [_f(_mean(r["received"])), "-" if rss is None else f"{rss / 1024:.1f} KiB"]
        rows.append([*row, f"{r['setup_seconds']:.2f} s"])
        verdicts = ["", ""]
        if r["waiting"] == 1000:
            req_ok = req_x != "n/a" and float(req_x) <= SCALE_GOAL
            verdicts = [_met(lat_x <= SCALE_GOAL), _met(req_ok)]
        where = f"{r['cluster']}, {r['processes']} proc"
        goals.append([where, r["waiting"], _f(lat["median"], "ms"), f"{lat_x:.2f}", _f(req), req_x])
        goals[-1] += verdicts
        if r["cluster"] == "1-member" and r["waiting"] == 1000 and r["processes"] == 1:
            heap = section["1-member"].get("traced", {}).get("traced_per_candidate")
            memory = {"rss_kib": r["rss_per_candidate"] / 1024, "heap_kib": heap and heap / 1024}
            section["1-member"]["memory"] = memory
        for path, n in r["paths"].items():
            by = paths.setdefault(r["waiting"], {}).setdefault(path.rsplit("/", 1)[-1], [])
            by.append(n / max(1, lat["n"]))
    section["table"] = table(
        "etcd | waiting> | processes> | hand-offs> | median ms> | p90 ms> | p99 ms> "
        "| vs 1 waiting (median)> | unary requests / hand-off> | watch create+cancel / hand-off> "
        "| watch responses / hand-off> | RSS per waiting candidate> | join time for N>",
        rows,
    )
    section["goals"] = table(
        "etcd, processes | waiting> | median ms> | vs 1 waiting> | requests / hand-off> "
        f"| vs 1 waiting> | latency goal (<= {SCALE_GOAL}) | requests goal (<= {SCALE_GOAL})",
        goals,
    )
    section["methods"] = "\n".join(
        f"- {n} waiting: "
        + ", ".join(f"{m} {statistics.mean(v):.2f}" for m, v in sorted(by.items()))
        for n, by in sorted(paths.items())
    )


def _switch(section: S) -> None:
    c = section["3-member"]
    c["table"] = comparison(list(c["latency"].items()), None)
    created = c["created"]
    c["confirmed"] = "\n".join(
        f"- {n} waiting: {statistics.mean(won):.0f} of {statistics.mean(created[n]):.0f}"
        for n, won in sorted(c["created before the win"].items(), key=lambda kv: int(kv[0]))
        if won and created.get(n)
    )


SHARES = ("resign", "watch events", "wait read", "idle in epoll")


def _profile(section: S) -> None:
    rows, files = [], []
    for p in [p for c in CLUSTERS for p in section.get(c, {}).get("runs", [])]:
        clients = p["clients"]
        pool = f"{clients} Clients, one pinned to each member" if clients > 1 else "one Client"
        total = p["shares"].get("total") or None
        shares = [_f(total and p["shares"][g] / total, ".0%") for g in SHARES]
        label = f"{p['waiting']} waiting, {p['members']}-member etcd, {pool}"
        rows.append([label, *stats(p["latency"])[:3], *shares])
        files.append(f"[{p['file']}](benchmarks/results/{p['file']})")
    head = "profile | hand-offs> | median ms> | p90 ms> | "
    section["table"] = table(head + " | ".join(f"{g} share>" for g in SHARES), rows)
    section["files"] = ", ".join(files)
    reads = section.get("1-member", {}).get("reads")
    if reads:
        ref = reads["point read of one key"]
        section["1-member"]["reads_table"] = comparison(list(reads.items()), ref)


def _cost(section: S) -> None:
    rows = []
    for r in section.values():
        row = [r["role"], r["label"], f"{r['per_minute']:.1f}"]
        row += [_per_minute(r["messages"], r["seconds"]), f"{r['cpu_per_minute']:.3f}"]
        rows.append([*row, f"{r['rss'] / 2**20:.1f}"])
    head = "role | process | requests / min> | of which | CPU s / min> | RSS MiB>"
    section["table"] = table(head, rows)


def _fleet(section: S) -> None:
    rows = []
    for f in section.values():
        row = [f["n"], "`geeh observe`" if f["impl"] == GEEH else "`etcdctl elect -l`"]
        row += [f"{f['per_second']:.2f}", _per_minute(f["messages"], f["seconds"], f["n"])]
        rows.append([*row, f"{f['cpu_share']:.2%}", f"{f['start_seconds']:.1f}"])
    head = "N> | observer | messages / s> | of which (per minute, per observer) "
    section["table"] = table(head + "| etcd CPU, share of a core> | start-up s>", rows)


def _shards(section: S) -> None:
    rows = []
    for s in section.values():
        minute = 60 / s["seconds"]
        counts = [s["received"], s["sent"], s["received"]]
        keys = ["Watch.Watch", "Watch.Watch", "Lease.LeaseKeepAlive"]
        per = [f"{c.get(k, 0.0) * minute:.1f}" for c, k in zip(counts, keys, strict=True)]
        kib = [f"{s['rss_per_election_kib']:.1f}", f"{s['held_per_election_kib']:.1f}"]
        rows.append([s["n"], f"{s['win_seconds']:.2f}", *per, *kib])
    head = "elections> | win all, s> | Watch received / min> | Watch sent / min> "
    head += "| LeaseKeepAlive received / min> | RSS per election KiB> | held per election KiB>"
    section["table"] = table(head, rows)


def _imports(section: S) -> None:
    rows = [
        [c["case"], f"{c['seconds'] * 1000:.0f}", c["modules"], "yes" if c["grpc"] else "no"]
        for c in section["cases"]
    ]
    section["table"] = table("case | import time, ms> | modules loaded> | gRPC loaded", rows)


TABLES: dict[str, Callable[[S], None]] = {
    "imports": _imports,
    "handoff": _compared("handoff"),
    "inproc": _compared("inproc"),
    "observers": _compared("observers"),
    "concurrent": _concurrent,
    "crash": _crash,
    "scale": _scale,
    "switch": _switch,
    "profile": _profile,
    "cost": _cost,
    "fleet": _fleet,
    "shards": _shards,
}


def values(data: S) -> S:
    """The results plus the tables and run facts the template reads."""
    v = copy.deepcopy(data)
    for name, derive in TABLES.items():
        if v.get(name):
            derive(v[name])
    meta = v["meta"]
    meta["command"] = "python -m benchmarks" + (" --quick" if meta["quick"] else "")
    meta["kind"] = "full run"
    if meta["quick"]:
        meta["kind"] = "**quick run**: fewer trials, figures for a check, not for quoting"
    meta["elapsed_s"] = f"{meta['elapsed']:.0f}"
    machine = [*meta["machine"].items(), ("load average at end", meta.get("load_end", "n/a"))]
    meta["machine_table"] = table(" | ", machine)
    notes = [
        f"- Stages measured again later and merged in (`--merge`): {m}." for m in meta["merged"]
    ]
    notes += [f"- A stage failed in this run: {e}" for e in meta["errors"].values()]
    missing = [name for name in TABLES if name not in data]
    if missing:
        notes.append(f"- Not measured in this run: {', '.join(missing)}.")
    meta["notes"] = "\n".join(notes) or "- Every stage ran in this run, and none failed."
    return v


# Benchmarks run on their own (``python -m benchmarks.beat``, ``python -m benchmarks.partition``)
# keep their results and their section beside results.json; the report ends with those
# sections, between markers that ``benchmarks.beat --into`` rewrites in place.
APART = ("beat", "partition")


def apart(results_dir: str) -> str:
    """The sections of the benchmarks run on their own, as they last wrote them."""
    sections = []
    for name in APART:
        path = os.path.join(results_dir, f"{name}.md")
        if os.path.exists(path):
            with open(path) as f:
                body = f.read().rstrip()
            sections.append(f"<!-- {name}: start -->\n{body}\n<!-- {name}: end -->")
    return "\n\n".join(sections)


def write(data: S, template_path: str, out: str, plot_dir: str | None) -> None:
    """Render the report to ``out``; with ``plot_dir``, (re)draw the plots there too."""
    with open(template_path) as f:
        text = render(f.read(), values(data))
    text = text.rstrip() + "\n\n" + apart(RESULTS)
    if plot_dir is not None:
        plots.draw(data, plot_dir)
    with open(out, "w") as f:
        f.write(text.rstrip() + "\n")

"""BENCHMARKS.md and the PNG plots from the results of one run."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

from geeh.win import READ_AHEAD_DELAY

from . import findings, report_users
from .common import ETCDCTL, GEEH, RESULTS, Series, ms, ratio
from .scale import SETTLE as SCALE_SETTLE

COLORS = {ETCDCTL: "#1f77b4", GEEH: "#d62728"}


# -- tables ------------------------------------------------------------------------------------


def comparison(rows: Sequence[tuple[str, Series]], reference: Series | None) -> list[str]:
    head = "| | trials | median ms | p90 ms | p99 ms | max ms |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if reference is not None:
        head += " median ratio | p99 ratio |"
        rule += "---:|---:|"
    out = [head, rule]
    for label, s in rows:
        line = (
            f"| {label} | {s.n}{f' ({s.failures} failed)' if s.failures else ''} | "
            f"{ms(s.median)} | {ms(s.p90)} | {ms(s.p99)} | {ms(s.max)} |"
        )
        if reference is not None:
            if s is reference:
                line += " 1 (reference) | 1 |"
            else:
                line += f" {ratio(s.median, reference.median)} | {ratio(s.p99, reference.p99)} |"
        out.append(line)
    return out


# -- plots -------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _box(ax: Any, groups: list[tuple[str, Series]], title: str, unit: float = 1000.0) -> None:
    data = [[x * unit for x in s.samples] or [math.nan] for _, s in groups]
    ax.boxplot(data, vert=False, whis=(0, 99), showfliers=False, widths=0.6)
    for i, values in enumerate(data, start=1):
        jitter = [i + (k % 7 - 3) * 0.035 for k in range(len(values))]
        ax.scatter(values, jitter, s=6, alpha=0.45, color="black", zorder=3)
    ax.set_yticks(range(1, len(groups) + 1), [label for label, _ in groups], fontsize=8)
    p99s = [s.p99 * unit for _, s in groups if s.n]
    if p99s:
        right = max(p99s) * 1.25
        beyond = sum(1 for values in data for x in values if x > right)
        ax.set_xlim(0, right)
        if beyond:
            title += f"  ({beyond} point{'s' if beyond > 1 else ''} beyond the axis)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("ms (box: quartiles, whiskers: min to p99)")
    ax.grid(axis="x", alpha=0.3)


def plot_boxes(path: str, panels: list[tuple[str, list[tuple[str, Series]]]]) -> None:
    plt = _plt()
    heights = [1.0 + 0.45 * len(groups) for _, groups in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(8.5, sum(heights) + 0.4), gridspec_kw={"height_ratios": heights}
    )
    if len(panels) == 1:
        axes = [axes]
    for ax, (title, groups) in zip(axes, panels, strict=True):
        _box(ax, groups, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_crash(path: str, series: dict[int, Series]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (ttl, s) in enumerate(sorted(series.items())):
        xs = [ttl + (k % 9 - 4) * 0.04 for k in range(s.n)]
        ax.scatter(
            xs,
            s.samples,
            s=14,
            alpha=0.7,
            label=f"TTL {ttl} s" if i == 0 else None,
            color="#d62728",
        )
        ax.hlines(
            [ttl, ttl + 0.6],
            ttl - 0.5,
            ttl + 0.5,
            colors=["gray", "green"],
            linestyles=["dotted", "dashed"],
        )
        ax.text(ttl + 0.52, ttl + 0.6, "goal: TTL + 0.6 s", fontsize=7, color="green", va="center")
    ax.set_xticks(sorted(series), [f"TTL {t} s" for t in sorted(series)])
    ax.set_xlim(min(series) - 1, max(series) + 1.8)
    ax.set_ylabel("SIGKILL -> successor leads (s)")
    ax.set_title("Crash failover (gee-h; dotted: TTL)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scale(path: str, results: list[Any]) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[tuple[str, int], list[Any]] = {}
    for r in results:
        groups.setdefault((r.cluster, r.processes), []).append(r)
    markers = ["o", "s", "^", "D"]
    for (cluster, processes), rows in groups.items():
        marker = markers[len(ax1.lines) // 2 % len(markers)]
        label = f"{cluster.split(',')[0]}, {processes} proc"
        xs = [r.waiting for r in rows]
        line = ax1.plot(
            xs, [r.latency.median * 1000 for r in rows], marker=marker, label=f"median, {label}"
        )[0]
        ax1.plot(
            xs,
            [r.latency.p90 * 1000 for r in rows],
            marker=marker,
            linestyle="dotted",
            color=line.get_color(),
            label=f"p90, {label}",
        )
        ax2.plot(
            xs,
            [statistics.mean(r.unary) if r.unary else math.nan for r in rows],
            marker=marker,
            color=line.get_color(),
            label=f"unary requests, {label}",
        )
        ax2.plot(
            xs,
            [statistics.mean(r.received) if r.received else math.nan for r in rows],
            marker=marker,
            linestyle="dotted",
            color=line.get_color(),
            label=f"watch responses, {label}",
        )
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("waiting candidates")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.set_ylim(bottom=0)
    ax1.set_ylabel("hand-off latency (ms)")
    ax1.set_title("Hand-off latency vs queue length", fontsize=10)
    ax2.set_ylabel("per hand-off")
    ax2.set_title("etcd requests and watch responses per hand-off", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost(path: str, roles: list[Any]) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [f"{r.role}: {r.label}" for r in roles]
    colors = [COLORS[r.impl] for r in roles]
    ys = range(len(roles))
    ax1.barh(ys, [r.per_minute for r in roles], color=colors)
    ax2.barh(ys, [r.cpu_per_minute for r in roles], color=colors)
    ax1.set_yticks(ys, labels, fontsize=7)
    ax2.set_yticks(ys, [""] * len(roles))
    ax1.set_xlabel("etcd requests (messages received) per minute")
    ax2.set_xlabel("CPU seconds per minute")
    for ax in (ax1, ax2):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Idle cost (red: gee-h, blue: etcdctl)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the document ------------------------------------------------------------------------------


def _img(name: str, alt: str) -> str:
    return f"![{alt}](benchmarks/results/{name})"


def write(path: str, data: dict[str, Any]) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    L: list[str] = []
    cfg = data["config"]
    L += [
        "# gee-h benchmarks",
        "",
        f"Generated by `python -m benchmarks{' --quick' if cfg.quick else ''}` on "
        f"{data['date']} ({'quick' if cfg.quick else 'full'} run, {data['elapsed']:.0f} s). "
        "Everything below was measured in that one run, gee-h side by side with etcd's own Go "
        f"client (`etcdctl elect`, {data['machine'].get('etcdctl', 'etcdctl')}) on the same "
        f"etcd ({data['machine'].get('etcd', 'etcd')}), trials interleaved. "
        "Regenerate with `python -m benchmarks` (`--quick` for fewer trials).",
        "",
    ]
    if data.get("merged"):
        L[-2] += (
            " Stages measured again later and merged in (`--merge`): "
            + "; ".join(data["merged"])
            + "."
        )
    L += headline(data)
    L += machine(data)
    L += method(data)
    L += section_handoff(data)
    L += section_observers(data)
    L += report_users.section_concurrent(data)
    L += section_crash(data)
    L += section_scale(data)
    L += section_switch(data)
    L += section_cost(data)
    L += report_users.section_fleet(data)
    L += report_users.section_shards(data)
    L += section_partition()
    L += section_profiles(data)
    L += notes(data)
    with open(path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


def section_partition() -> list[str]:
    """5d, measured apart (``python -m benchmarks.partition``): its last results, if any."""
    path = os.path.join(RESULTS, "partition.md")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [*f.read().rstrip().splitlines(), ""]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def headline(data: dict[str, Any]) -> list[str]:
    L = [
        "## Headline figures",
        "",
        "| what | gee-h | reference | ratio | goal | |",
        "|---|---:|---:|---:|---|---|",
    ]
    for cluster in ("1-member", "3-member"):
        h = data.get(f"handoff-process-{cluster}")
        if h:
            r = h[GEEH].median / h[ETCDCTL].median
            L.append(
                f"| graceful hand-off, processes (SIGINT), {cluster} etcd, median | "
                f"{ms(h[GEEH].median)} ms | {ms(h[ETCDCTL].median)} ms (`etcdctl elect`) | "
                f"{r:.2f} | <= 1.0 | {_met(r <= 1.0)} |"
            )
    for cluster in ("1-member", "3-member"):
        h = data.get(f"handoff-process-{cluster}")
        if h and h[GEEH].requests and h[ETCDCTL].requests:
            ours, theirs = h[GEEH].requests_per_sample, h[ETCDCTL].requests_per_sample
            L.append(
                f"| etcd requests per graceful hand-off (1 waiting), {cluster} etcd, etcd's "
                f"counters | {ours:.2f} | {theirs:.2f} (`etcdctl elect`) | "
                f"{ratio(ours, theirs)} | (report) | |"
            )
    for cluster in ("1-member", "3-member"):
        h = data.get(f"handoff-inproc-{cluster}")
        if h:
            L.append(
                f"| graceful hand-off, in-process `resign()`, {cluster} etcd, median | "
                f"{ms(h['resign'].median)} ms | {ms(h['floor'].median)} ms (floor: one "
                f"commit + one watch event) | {ratio(h['resign'].median, h['floor'].median)} | "
                "close to 1 | |"
            )
    for cluster in ("1-member", "3-member"):
        o = data.get(f"observers-{cluster}")
        if o:
            for kind, label in ((GEEH, "`geeh elect --listen`"), ("in-process", "`observe()`")):
                r = o[kind].median / o[ETCDCTL].median
                L.append(
                    f"| observer notification, {label}, {cluster} etcd, median | "
                    f"{ms(o[kind].median)} ms | {ms(o[ETCDCTL].median)} ms (`etcdctl elect -l`) "
                    f"| {r:.2f} | <= 1.0 | {_met(r <= 1.0)} |"
                )
    c = data.get("crash")
    if c:
        for ttl, s in sorted(c.items()):
            L.append(
                f"| crash failover (SIGKILL), TTL {ttl} s, p99 (median {s.median:.2f} s) | "
                f"{s.p99:.2f} s | n/a (`etcdctl elect`: TTL fixed at 60 s) | | "
                f"<= TTL + 0.6 s = {ttl + 0.6:.1f} s | {_met(s.p99 <= ttl + 0.6)} |"
            )
    sc = data.get("scale")
    if sc:
        big = next((r for r in sc["results"] if r.waiting == 1000 and r.processes == 1), None)
        t = sc.get("traced")
        if big is not None or t:
            rss = f"{big.rss_per_candidate / 1024:.1f} KiB RSS" if big is not None else "n/a"
            heap = f"{t['traced_per_candidate'] / 1024:.1f} KiB Python heap" if t else "n/a"
            L.append(
                f"| memory per waiting candidate (1000 in one process) | {rss}; {heap} | "
                "n/a (`etcdctl elect` is one process per candidate) | | (report) | |"
            )
    roles = {(r.role, r.impl, r.ttl): r for r in data.get("cost") or []}
    for role, ttl in (("leader", 60), ("waiting", 60), ("observer", None)):
        g, e = roles.get((role, GEEH, ttl)), roles.get((role, ETCDCTL, None))
        if g and e:
            L.append(
                f"| idle {role}{' (TTL 60 s both)' if ttl else ''}: etcd requests per minute "
                f"/ CPU s per minute | {g.per_minute:.1f} / {g.cpu_per_minute:.3f} | "
                f"{e.per_minute:.1f} / {e.cpu_per_minute:.3f} (`etcdctl`) | "
                f"{ratio(g.per_minute, e.per_minute)} / {ratio(g.cpu_per_minute, e.cpu_per_minute)}"
                " | (report) | |"
            )
    L += [
        "",
        "Ratios are gee-h / reference; below 1 means gee-h is faster (or cheaper). Idle "
        "figures at gee-h's default TTL (10 s) and at a short TTL are in section 5.",
        "",
    ]
    L += headline_scale(data)
    return L


def requests_by_method(s: Series) -> str:
    methods = sorted({m for c in s.requests for m in c})
    parts = [f"{m} {statistics.mean(c.get(m, 0) for c in s.requests):.2f}" for m in methods]
    return ", ".join(parts) or "none"


def headline_scale(data: dict[str, Any]) -> list[str]:
    groups = findings.scale_groups(data)
    if not groups:
        return []
    goal = findings.SCALE_GOAL
    L = [
        f"Scale (section 4): hand-off latency and etcd requests per hand-off with N waiting "
        f"candidates, against 1 waiting (2 candidates); goal at 1000: at most {goal} times.",
        "",
        "| etcd, processes | waiting | median ms | vs 1 waiting | requests / hand-off "
        f"| vs 1 waiting | latency goal (<= {goal}) | requests goal (<= {goal}) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for (cluster, processes), rows in groups.items():
        one = rows.get(1)
        if one is None:
            continue
        for n, r in sorted(rows.items()):
            lat = r.latency.median / one.latency.median
            req = findings.mean(r.unary) / findings.mean(one.unary)
            last = n == 1000
            L.append(
                f"| {cluster}, {processes} proc | {n} | {ms(r.latency.median)} | {lat:.2f} | "
                f"{findings.mean(r.unary):.2f} | {req:.2f} | "
                f"{_met(lat <= goal) if last else ''} | {_met(req <= goal) if last else ''} |"
            )
    L.append("")
    return L


def machine(data: dict[str, Any]) -> list[str]:
    L = ["## Machine", "", "| | |", "|---|---|"]
    for k, v in data["machine"].items():
        L.append(f"| {k} | {v} |")
    L.append(f"| load average at end | {data.get('load_end', 'n/a')} |")
    L += [
        "",
        "etcd runs on loopback with its data directory in a temporary directory (WAL fsync on "
        "the same disk), heartbeat 100 ms, election timeout 1 s (LocalEtcdCluster defaults). "
        "The machine is shared: other engineers' test runs may have used the same two cores "
        "during the run; interleaving spreads that noise evenly over gee-h and the reference, "
        "but the tails (p99) carry it.",
        "",
    ]
    return L


def method(data: dict[str, Any]) -> list[str]:
    return [
        "## Method",
        "",
        "- **Clock**: `time.monotonic()` (CLOCK_MONOTONIC, system-wide). A child's stdout is "
        "read by a thread of the driver that stamps each line the moment it is read, so the "
        "stamp does not wait for the event loop; the scale workers stamp their own events.",
        "- **Interleaving**: reference and gee-h trials alternate one by one (A B, then B A "
        "for the next pair; with three or four kinds, a rotation), on the same etcd, in the "
        "same minutes; per-kind elections keep the idle processes of the other kind out of "
        "the way. No trial overlaps another, except in the crash benchmark (see there).",
        "- **Statistics**: median, p90, p99 by linear interpolation between closest ranks; "
        "with fewer than 100 trials p99 is close to the maximum, so read it as the tail.",
        "- **Processes**: `geeh elect` is run as `" + data["machine"]["gee-h CLI used"] + "`; "
        "the successor is always the same kind of process as the leader. Before each trial "
        "the successor's key must exist in etcd, then the driver waits a settle time (0.4 s "
        "for processes, 50 ms in-process) so its watch is in place.",
        "- **etcd requests**: in the scale workers, `Transport.request_count` (unary attempts "
        "and streams opened) plus the watch create/cancel messages counted by wrapping "
        "`WatchHub.watch/_remove` in the worker process (the library is not changed); for "
        "the process hand-off, etcd's own `grpc_server_msg_received_total` counters of unary "
        "methods, summed over the members, for etcdctl alike; for the idle cost, the same "
        "counters, one etcd per measured process, which also count keepalives and watch "
        "progress requests.",
        "- Benchmarks are not tests: nothing here asserts on timing.",
        "",
    ]


def section_handoff(data: dict[str, Any]) -> list[str]:
    L = ["## 1. Graceful hand-off", ""]
    L += [
        "**(a) Processes.** One leader process and one waiting successor process of the "
        "same kind; the leader gets SIGINT; the time until the successor prints its key "
        "line. `etcdctl elect` resigns with one guarded delete (a Txn); `geeh elect` with "
        "one LeaseRevoke of its campaign's own lease, which deletes the key in the same "
        "commit. The successor sees the DELETE on its watch; Go's campaign then reads the "
        "queue again and `etcdctl` reads its own key before printing, while gee-h's "
        "successor, second in line, needs no read.",
        "",
    ]
    panels = []
    for cluster in ("1-member", "3-member"):
        h = data.get(f"handoff-process-{cluster}")
        if not h:
            continue
        L += [f"{cluster} etcd:", ""]
        rows = [("`etcdctl elect` (reference)", h[ETCDCTL]), ("`geeh elect`", h[GEEH])]
        L += [*comparison(rows, h[ETCDCTL]), ""]
        if h[GEEH].requests and h[ETCDCTL].requests:
            L += [
                "Unary requests etcd received per hand-off (its own counters, all members, "
                "from the SIGINT until the old leader has exited and the successor printed): "
                f"`etcdctl elect` {h[ETCDCTL].requests_per_sample:.2f} "
                f"({requests_by_method(h[ETCDCTL])}); `geeh elect` "
                f"{h[GEEH].requests_per_sample:.2f} ({requests_by_method(h[GEEH])}).",
                "",
            ]
        panels.append((f"Hand-off, processes, {cluster} etcd", rows))
    L += [
        "**(b) In-process.** Two Clients in one event loop: `await leadership.resign()` until "
        "the waiting candidate's `await election.campaign(...)` returns; the floor is one "
        "Delete commit plus one watch event delivered (gee-h's transport and watch stream; "
        "and `etcdctl watch` printing the DELETE, the Go floor).",
        "",
    ]
    for cluster in ("1-member", "3-member"):
        h = data.get(f"handoff-inproc-{cluster}")
        if not h:
            continue
        L += [f"{cluster} etcd:", ""]
        rows = [
            ("floor: Delete + watch event (gee-h transport)", h["floor"]),
            ("floor: Delete + `etcdctl watch` prints", h["floor-go"]),
            ("gee-h `resign()` -> `campaign` returns", h["resign"]),
        ]
        L += [*comparison(rows, h["floor"]), ""]
        panels.append((f"Hand-off, in-process, {cluster} etcd", rows))
    if panels:
        plot_boxes(os.path.join(RESULTS, "handoff.png"), panels)
        L += [_img("handoff.png", "hand-off latency"), ""]
    return L


def section_observers(data: dict[str, Any]) -> list[str]:
    L = [
        "## 2. Observer notification",
        "",
        "The driver deletes the leader key of an election (the next-oldest key becomes the "
        "leader); time until the observer reports the new leader. Each kind watches an "
        "election of its own, and trials rotate over the kinds, so one observer wakes per "
        "trial. `etcdctl elect -l` reads the new leader after the delete event (one Range); "
        "gee-h's observer keeps the candidates in create order and needs no read.",
        "",
    ]
    panels = []
    for cluster in ("1-member", "3-member"):
        o = data.get(f"observers-{cluster}")
        if not o:
            continue
        L += [f"{cluster} etcd:", ""]
        rows = [
            ("`etcdctl elect -l` (reference)", o[ETCDCTL]),
            ("`geeh elect --listen`", o[GEEH]),
            ("gee-h `observe()` in-process", o["in-process"]),
            ("floor: Delete + raw gee-h watch event", o["floor"]),
        ]
        L += [*comparison(rows, o[ETCDCTL]), ""]
        panels.append((f"Observer notification, {cluster} etcd", rows))
    if panels:
        plot_boxes(os.path.join(RESULTS, "observers.png"), panels)
        L += [_img("observers.png", "observer notification latency"), ""]
    return L


def section_crash(data: dict[str, Any]) -> list[str]:
    c = data.get("crash")
    if not c:
        return []
    L = [
        "## 3. Crash failover (gee-h only)",
        "",
        "The leader process (`geeh elect --ttl T`) is SIGKILLed while a successor process "
        "waits; time until the successor prints its key line. `etcdctl elect` has no TTL "
        "option (its session TTL is fixed at 60 s), so there is no reference figure. etcd "
        "expires the dead lease TTL after its last keepalive (sent every TTL/3), checked "
        "every 500 ms: expect between TTL - TTL/3 and TTL + 0.5 s plus the hand-off. The TTL 2 s "
        "and TTL 5 s chains ran at the same time on two elections (their trials overlap; "
        "each is almost entirely idle waiting for the expiry), single-member etcd.",
        "",
        "| TTL | trials | median s | p90 s | p99 s | max s | p99 - TTL s "
        "| goal p99 <= TTL + 0.6 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ttl, s in sorted(c.items()):
        met = "met" if s.p99 <= ttl + 0.6 else "not met"
        L.append(
            f"| {ttl} s | {s.n}{f' ({s.failures} failed)' if s.failures else ''} | "
            f"{s.median:.3f} | {s.p90:.3f} | {s.p99:.3f} | {s.max:.3f} | {s.p99 - ttl:+.3f} | "
            f"{met} |"
        )
    plot_crash(os.path.join(RESULTS, "crash.png"), c)
    L += ["", _img("crash.png", "crash failover"), ""]
    return L


def section_scale(data: dict[str, Any]) -> list[str]:
    sc = data.get("scale")
    if not sc:
        return []
    L = [
        "## 4. Scale: waiting candidates",
        "",
        "N waiting candidates plus the leader in one election, each candidate with its own "
        "session (TTL 60 s), in one worker process or round-robin over four. Each hand-off: "
        "the leader resigns, the next candidate wins, one candidate joins at the tail (queue "
        "length stays N). Requests per hand-off: counter deltas over all workers from just "
        f"before the resign to {SCALE_SETTLE:g} s after the win (the resign's LeaseRevoke; "
        "the read-ahead of the new second in line, which reads "
        f"{READ_AHEAD_DELAY * 1000:.0f} ms after the deletion to learn that the new leader is "
        "the only key ahead of it; watch creates and cancels); the tail refill is not "
        "counted. Watch responses: WatchResponse messages all workers received in that window "
        "(each wakes a watcher). On the 3-member cluster each worker starts on a different "
        "member, so leases (and candidate keys, which are lease IDs in hex) carry different "
        "member prefixes, and the candidates join one at a time, round-robin over the "
        "workers, as replicas spread over a cluster and started one after another would: "
        "nearly every candidate's neighbour in the line is then far from it in key order.",
        "",
        "| etcd | waiting | processes | hand-offs | median ms | p90 ms | p99 ms "
        "| vs 1 waiting (median) | unary requests / hand-off | watch create+cancel / hand-off "
        "| watch responses / hand-off | RSS per waiting candidate | join time for N |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    results = list(sc["results"]) + list(data.get("scale-3-member") or [])
    base = {(r.cluster, r.processes): r for r in results if r.waiting == 1}
    paths: dict[str, Any] = {}
    for r in results:
        b = base.get((r.cluster, r.processes))
        rss = (
            f"{r.rss_per_candidate / 1024:.1f} KiB"
            if r.rss_per_candidate == r.rss_per_candidate
            else "-"
        )
        L.append(
            f"| {r.cluster} | {r.waiting} | {r.processes} | {r.latency.n} | "
            f"{ms(r.latency.median)} | {ms(r.latency.p90)} | {ms(r.latency.p99)} | "
            f"{ratio(r.latency.median, b.latency.median) if b else 'n/a'} | "
            f"{_mean(r.unary)} (max {max(r.unary, default=0):.0f}) | {_mean(r.watch_msgs)} | "
            f"{_mean(r.received)} | {rss} | {r.setup_seconds:.2f} s |"
        )
        for path, n in r.paths.items():
            paths.setdefault(f"{r.waiting} waiting", {}).setdefault(path, []).append(
                n / max(1, r.latency.n)
            )
    L += ["", "Unary requests per hand-off by method (mean over the runs above):", ""]
    for label, by_path in paths.items():
        parts = ", ".join(
            f"{p.rsplit('/', 1)[-1]} {statistics.mean(v):.2f}" for p, v in sorted(by_path.items())
        )
        L.append(f"- {label}: {parts}")
    t = sc.get("traced")
    if t:
        L += [
            "",
            f"Python heap per waiting candidate (tracemalloc, {t['candidates']} candidates "
            f"joined in one process after the leader): {t['traced_per_candidate'] / 1024:.1f} "
            "KiB. RSS growth includes gRPC's C-core allocations and the allocator's slack; "
            "at N=1 it is one page-granular sample, not a per-candidate figure.",
        ]
    plot_scale(os.path.join(RESULTS, "scale.png"), results)
    L += ["", _img("scale.png", "scale"), ""]
    return L


def section_switch(data: dict[str, Any]) -> list[str]:
    sw = data.get("switch")
    if not sw:
        return []
    L = [
        "### 4b. A member switch with many waiting candidates",
        "",
        "3-member etcd. The driver reports the client's pinned member failed "
        "(`Transport.fail`, what the transport does itself after a timeout), then the leader "
        "resigns at once: time until the successor's campaign returns, i.e. until the "
        "client's watches are re-established on the next member and the Delete reaches the "
        "successor. 10 or 1000 waiting candidates on one client (one client per queue "
        "length), interleaved with plain hand-offs.",
        "",
    ]
    rows = list(sw["latency"].items())
    L += [*comparison(rows, None), ""]
    for n, counts in sorted(sw.get("created before the win", {}).items()):
        total = sw.get("created", {}).get(n, [])
        if counts and total:
            L.append(
                f"- {n} waiting, after a switch: the successor won once etcd had confirmed "
                f"{statistics.mean(counts):.0f} of the {statistics.mean(total):.0f} watches "
                "the client re-created (means over the switches; the client's "
                "`WatchResponse.created` confirmations, time-stamped as they arrived)."
            )
    L.append("")
    return L


def _mean(values: Sequence[float]) -> str:
    return f"{statistics.mean(values):.2f}" if values else "n/a"


def section_cost(data: dict[str, Any]) -> list[str]:
    roles = data.get("cost")
    if not roles:
        return []
    L = [
        "## 5. Cost of leading, waiting and observing (idle)",
        "",
        f"Each process alone on its own single-member etcd, all sampled over the same "
        f"{roles[0].seconds:.0f} s after a 2 s settle. Requests are messages etcd received "
        "from it (unary calls, keepalives, watch requests), per minute; CPU is user + system "
        "seconds per minute of the process (for gee-h, the whole Python process including "
        "gRPC's threads). A waiting candidate and an observer wait behind a lease-less "
        "leader key the driver put, so their etcd's counters show only their own traffic.",
        "",
        "| role | process | requests / min | of which | CPU s / min | RSS MiB |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in roles:
        detail = (
            ", ".join(f"{k} {v * 60 / r.seconds:.1f}" for k, v in sorted(r.messages.items())) or "-"
        )
        L.append(
            f"| {r.role} | {r.label} | {r.per_minute:.1f} | {detail} | {r.cpu_per_minute:.3f} | "
            f"{r.rss / 2**20:.1f} |"
        )
    plot_cost(os.path.join(RESULTS, "cost.png"), roles)
    L += ["", _img("cost.png", "idle cost"), ""]
    return L


def all_profiles(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data.get("profiles") or []) + list(data.get("profiles-3-member") or [])


def profile_label(p: dict[str, Any]) -> str:
    clients = p.get("clients", 1)
    where = f"{p.get('members', 1)}-member etcd"
    if clients > 1:
        where += f", {clients} Clients (one pinned to each member)"
    else:
        where += ", one Client"
    return f"{p['waiting']} waiting, {where}"


def section_profiles(data: dict[str, Any]) -> list[str]:
    from .profiling import SHARES

    profiles = all_profiles(data)
    L = ["## 6. Profiles", ""]
    if profiles:
        L += [
            "pyinstrument, sampling every 100 us, only inside hand-off windows (from "
            "`resign()` until the successor's `campaign` returns), all candidates in the "
            "driver process. Full trees: "
            + ", ".join(f"[{p['file']}](benchmarks/results/{p['file']})" for p in profiles)
            + ". Shares: the part of the sampled windows spent under the outermost frame of "
            + "; ".join(f"{group}: `{'`, `'.join(names)}`" for group, names in SHARES.items())
            + " (the rest: the event loop, gRPC's reader and writer, the campaigns' return).",
            "",
            "| profile | hand-offs | median ms | p90 ms | "
            + " | ".join(f"{g} share" for g in SHARES)
            + " |",
            "|---|---:|---:|---:|" + "---:|" * len(SHARES),
        ]
        for p in profiles:
            s = p["latency"]
            shares = p.get("shares") or {}
            total = shares.get("total") or float("nan")
            cells = " | ".join(f"{shares.get(g, float('nan')) / total:.0%}" for g in SHARES)
            L.append(f"| {profile_label(p)} | {s.n} | {ms(s.median)} | {ms(s.p90)} | {cells} |")
        L.append("")
        for p in profiles:
            lines = p["text"].splitlines()
            start = next((i for i, x in enumerate(lines) if x.startswith("Profile at")), 0)
            tree = [x for x in lines[start + 1 :] if x.strip()][:40]
            L += [
                f"{profile_label(p)} (seconds summed over {p['latency'].n} hand-offs; "
                "sampling slows the code, so read shares, not absolute times):",
                "",
                "```",
                *tree,
                "```",
                "",
            ]
    L += section_reads(data)
    L += data.get("findings", [])
    L.append("")
    return L


def section_reads(data: dict[str, Any]) -> list[str]:
    reads = data.get("reads")
    if not reads:
        return []
    point = reads.get("point read of one key")
    rows = list(reads.items())
    return [
        "### 6b. The wait read on etcd's side",
        "",
        "Round trip of the Range a waiting campaign sends (`Campaign._wait`: keys created up "
        "to a revision, newest first by create revision, limit 3, keys only) with 10, 100 and "
        "1000 keys under the prefix, against a point read of one key, from the driver's "
        "Client, in rotation, 1-member etcd.",
        "",
        *comparison(rows, point),
        "",
    ]


def notes(data: dict[str, Any]) -> list[str]:
    L = ["## Notes", ""]
    for err in data.get("errors", []):
        L.append(f"- A benchmark stage failed in this run: {err}")
    L += data.get("notes", [])
    return L

"""The PNG plots, drawn from the saved results (matplotlib)."""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

S = dict[str, Any]
COLORS = {"etcdctl": "#1f77b4", "gee-h": "#d62728"}


def _figure(*args: Any, **kwargs: Any) -> Any:
    """``plt.subplots(...)`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _mean(xs: list[float]) -> float:
    return statistics.mean(xs) if xs else math.nan


def _save(fig: Any, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _box(ax: Any, groups: list[tuple[str, S]], title: str) -> None:
    data = [[x * 1000 for x in s["samples"]] or [math.nan] for _, s in groups]
    ax.boxplot(data, vert=False, whis=(0, 99), showfliers=False, widths=0.6)
    for i, values in enumerate(data, start=1):
        jitter = [i + (k % 7 - 3) * 0.035 for k in range(len(values))]
        ax.scatter(values, jitter, s=6, alpha=0.45, color="black", zorder=3)
    ax.set_yticks(range(1, len(groups) + 1), [label for label, _ in groups], fontsize=8)
    p99s = [s["p99"] * 1000 for _, s in groups if s["n"]]
    if p99s:
        right = max(p99s) * 1.25
        beyond = sum(1 for values in data for x in values if x > right)
        ax.set_xlim(0, right)
        if beyond:
            title += f"  ({beyond} point{'s' if beyond > 1 else ''} beyond the axis)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("ms (box: quartiles, whiskers: min to p99)")
    ax.grid(axis="x", alpha=0.3)


def boxes(path: str, panels: list[tuple[str, list[tuple[str, S]]]]) -> None:
    if not panels:
        return
    heights = [1.0 + 0.45 * len(groups) for _, groups in panels]
    fig, axes = _figure(
        len(panels), 1, figsize=(8.5, sum(heights) + 0.4), gridspec_kw={"height_ratios": heights}
    )
    for ax, (title, groups) in zip([axes] if len(panels) == 1 else axes, panels, strict=True):
        _box(ax, groups, title)
    _save(fig, path)


def crash(path: str, series: dict[str, S]) -> None:
    fig, ax = _figure(figsize=(7, 3.6))
    ttls = sorted(int(t) for t in series)
    for ttl in ttls:
        s = series[str(ttl)]
        xs = [ttl + (k % 9 - 4) * 0.04 for k in range(s["n"])]
        ax.scatter(xs, s["samples"], s=14, alpha=0.7, color="#d62728")
        ax.hlines(
            [ttl, ttl + 0.6],
            ttl - 0.5,
            ttl + 0.5,
            colors=["gray", "green"],
            linestyles=["dotted", "dashed"],
        )
        ax.text(ttl + 0.52, ttl + 0.6, "goal: TTL + 0.6 s", fontsize=7, color="green", va="center")
    ax.set_xticks(ttls, [f"TTL {t} s" for t in ttls])
    ax.set_xlim(min(ttls) - 1, max(ttls) + 1.8)
    ax.set_ylabel("SIGKILL -> successor leads (s)")
    ax.set_title("Crash failover (gee-h; dotted: TTL)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def scale(path: str, results: list[S]) -> None:
    fig, (ax1, ax2) = _figure(1, 2, figsize=(11, 4.2))
    groups: dict[tuple[str, int], list[S]] = {}
    for r in results:
        groups.setdefault((r["cluster"], r["processes"]), []).append(r)
    for k, ((cluster, processes), rows) in enumerate(groups.items()):
        style = {"marker": "os^D"[k % 4], "color": f"C{k}"}
        label = f"{cluster.split(',')[0]}, {processes} proc"
        xs = [r["waiting"] for r in rows]
        for ax, get, line, what in (
            (ax1, lambda r: r["latency"]["median"] * 1000, "solid", "median"),
            (ax1, lambda r: r["latency"]["p90"] * 1000, "dotted", "p90"),
            (ax2, lambda r: _mean(r["unary"]), "solid", "unary requests"),
            (ax2, lambda r: _mean(r["received"]), "dotted", "watch responses"),
        ):
            ax.plot(xs, [get(r) for r in rows], linestyle=line, label=f"{what}, {label}", **style)
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
    _save(fig, path)


def cost(path: str, roles: list[S]) -> None:
    fig, (ax1, ax2) = _figure(1, 2, figsize=(10, 3.6))
    colors = [COLORS[r["impl"]] for r in roles]
    ys = range(len(roles))
    ax1.barh(ys, [r["per_minute"] for r in roles], color=colors)
    ax2.barh(ys, [r["cpu_per_minute"] for r in roles], color=colors)
    ax1.set_yticks(ys, [f"{r['role']}: {r['label']}" for r in roles], fontsize=7)
    ax2.set_yticks(ys, [""] * len(roles))
    ax1.set_xlabel("etcd requests (messages received) per minute")
    ax2.set_xlabel("CPU seconds per minute")
    for ax in (ax1, ax2):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Idle cost (red: gee-h, blue: etcdctl)", fontsize=10)
    _save(fig, path)


def draw(data: S, out_dir: str) -> None:
    """Every plot whose stage is in the results, into ``out_dir``."""
    from .report import CLUSTERS, COMPARED

    os.makedirs(out_dir, exist_ok=True)
    kinds = {
        "handoff.png": [("handoff", "Hand-off, processes"), ("inproc", "Hand-off, in-process")],
        "observers.png": [("observers", "Observer notification")],
    }
    for png, stages in kinds.items():
        panels = [
            (f"{title}, {c} etcd", [(label, data[name][c][k]) for k, label in COMPARED[name][0]])
            for name, title in stages
            for c in CLUSTERS
            if c in data.get(name, {})
        ]
        boxes(os.path.join(out_dir, png), panels)
    if data.get("crash", {}).get("1-member"):
        crash(os.path.join(out_dir, "crash.png"), data["crash"]["1-member"])
    results = [r for c in CLUSTERS for r in data.get("scale", {}).get(c, {}).get("results", [])]
    if results:
        scale(os.path.join(out_dir, "scale.png"), results)
    if data.get("cost"):
        cost(os.path.join(out_dir, "cost.png"), list(data["cost"].values()))

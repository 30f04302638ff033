"""Report sections for the benchmarks as users run them: observers side by side (2c), a
fleet of idle observers (5b), and one process holding many elections (5c)."""

from __future__ import annotations

from typing import Any

from .common import ETCDCTL, GEEH, ms, ratio
from .concurrent import CONCURRENT, SEQUENTIAL


def concurrent_medians(data: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """mode -> (gee-h median, etcdctl median), in seconds."""
    c = data.get("concurrent")
    if not c:
        return {}
    s = c["series"]
    return {m: (s[(m, GEEH)].median, s[(m, ETCDCTL)].median) for m in (CONCURRENT, SEQUENTIAL)}


def section_concurrent(data: dict[str, Any]) -> list[str]:
    c = data.get("concurrent")
    if not c:
        return []
    s = c["series"]
    L = [
        "## 2c. Observers side by side (1-member etcd)",
        "",
        "`geeh observe` and `etcdctl elect -l` watch the same election, each in its own "
        "process on the same two cores, and one Delete wakes both; each is timed from the "
        "Delete to its own printed line. Interleaved with those trials, in the same run, the "
        "sequential case: the same two commands, each alone on an election of its own, woken "
        "one at a time (as in section 2).",
        "",
        "| case | trials | gee-h median ms | p90 | p99 | `etcdctl elect -l` median ms | p90 "
        "| p99 | median ratio | p90 ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in (CONCURRENT, SEQUENTIAL):
        g, e = s[(mode, GEEH)], s[(mode, ETCDCTL)]
        L.append(
            f"| {'side by side, one Delete wakes both' if mode == CONCURRENT else 'one at a time'}"
            f" | {g.n} | {ms(g.median)} | {ms(g.p90)} | {ms(g.p99)} | {ms(e.median)} | "
            f"{ms(e.p90)} | {ms(e.p99)} | {ratio(g.median, e.median)} | {ratio(g.p90, e.p90)} |"
        )
    L.append("")
    profile = c.get("profile")
    if profile:
        samples = int(profile["samples"][0][1])
        L += [
            "Where the side-by-side gee-h observer spent its busy samples (py-spy at 1000 Hz, "
            f"{samples} samples, over separate trials after the timed ones; raw stacks in "
            "`benchmarks/results/profile-concurrent-observer.txt`): on top of the stack "
            "(self), and gee-h's and gRPC's functions anywhere on it (inclusive).",
            "",
            "| self | share | inclusive | share |",
            "|---|---:|---|---:|",
        ]
        own, inc = profile["self"], profile["inclusive"]
        for i in range(max(len(own), len(inc))):
            a = f"`{own[i][0]}` | {own[i][1]:.0%}" if i < len(own) else " | "
            b = f"`{inc[i][0]}` | {inc[i][1]:.0%}" if i < len(inc) else " | "
            L.append(f"| {a} | {b} |")
        L.append("")
    elif not c.get("profiled"):
        L += ["(py-spy is not installed: no profile; `pip install py-spy`.)", ""]
    return L


def section_fleet(data: dict[str, Any]) -> list[str]:
    fleets = data.get("fleet")
    if not fleets:
        return []
    L = [
        "## 5b. A fleet of idle observers",
        "",
        f"N observer processes of one election on an etcd of their own, idle for "
        f"{fleets[0].seconds:.0f} s; gee-h's fleet (`geeh observe`) and etcdctl's "
        "(`etcdctl elect -l`) one after the other. Messages are what etcd received "
        "(`grpc_server_msg_received_total`); etcd CPU is the etcd process's user + system "
        "time over the window (/proc/PID/stat), as a share of one core. HTTP/2 pings are not "
        "gRPC messages and are not counted: etcdctl pings every 10 s (its 2 s "
        "`--keepalive-time` raised to gRPC-Go's 10 s minimum), gee-h every 10 s while a "
        "stream is open.",
        "",
        "| N | observer | messages / s | of which (per minute, per observer) | etcd CPU, "
        "share of a core | start-up s |",
        "|---:|---|---:|---|---:|---:|",
    ]
    for f in fleets:
        detail = ", ".join(
            f"{k} {v * 60 / f.seconds / f.n:.1f}" for k, v in sorted(f.messages.items())
        )
        name = "`geeh observe`" if f.impl == GEEH else "`etcdctl elect -l`"
        L.append(
            f"| {f.n} | {name} | {f.per_second:.2f} | {detail or '-'} | {f.cpu_share:.2%} | "
            f"{f.start_seconds:.1f} |"
        )
    return [*L, ""]


def section_shards(data: dict[str, Any]) -> list[str]:
    shards = data.get("shards")
    if not shards:
        return []
    L = [
        "## 5c. Shard leadership: one process, many elections, one session",
        "",
        "A process campaigns in N elections at once on one shared session (TTL 10 s), on an "
        "etcd of its own; *win all* is the time until it leads every one. Then, idle for "
        f"{shards[0].seconds:.0f} s, what etcd received and sent on its streams, per minute. "
        "RSS per election is the process's growth from one election held to N + 1, over N; "
        "*held* is the same after glibc's `malloc_trim(0)` has returned freed heap to the "
        "system (what the elections keep, without the high-water mark of N campaigns in "
        "flight).",
        "",
        "| elections | win all, s | Watch received / min | Watch sent / min | "
        "LeaseKeepAlive received / min | RSS per election KiB | held per election KiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in shards:
        L.append(
            f"| {s.n} | {s.win_seconds:.2f} | {s.per_minute(s.received, 'Watch.Watch'):.1f} | "
            f"{s.per_minute(s.sent, 'Watch.Watch'):.1f} | "
            f"{s.per_minute(s.received, 'Lease.LeaseKeepAlive'):.1f} | "
            f"{s.rss_per_election_kib:.1f} | {s.held_per_election_kib:.1f} |"
        )
    return [*L, ""]

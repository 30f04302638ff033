"""Findings for the benchmarks as users run them (sections 2c, 5b, 5c), from the run's data."""

from __future__ import annotations

from typing import Any

from .common import ETCDCTL, GEEH, ms
from .concurrent import CONCURRENT, SEQUENTIAL


def slower(data: dict[str, Any]) -> list[str]:
    """Side-by-side comparisons where gee-h's median was above etcdctl's."""
    c = data.get("concurrent")
    if not c:
        return []
    out = []
    for mode in (CONCURRENT, SEQUENTIAL):
        g, e = c["series"][(mode, GEEH)], c["series"][(mode, ETCDCTL)]
        if g.median > e.median:
            what = "side by side with" if mode == CONCURRENT else "one at a time, beside"
            out.append(
                f"`geeh observe` {what} `etcdctl elect -l` ({ms(g.median)} ms vs "
                f"{ms(e.median)} ms, section 2c)"
            )
    return out


def _share(profile: dict[str, list[tuple[str, float]]], key: str, *needles: str) -> float:
    return sum(s for frame, s in profile.get(key, []) if any(n in frame for n in needles))


def concurrent_finding(data: dict[str, Any]) -> list[str]:
    c = data.get("concurrent")
    if not c:
        return []
    s = c["series"]
    parts = []
    for mode, label in ((SEQUENTIAL, "one at a time"), (CONCURRENT, "side by side")):
        g, e = s[(mode, GEEH)], s[(mode, ETCDCTL)]
        parts.append(
            f"{label} {ms(g.median)} ms vs {ms(e.median)} ms (ratio {g.median / e.median:.2f}, "
            f"p90 ratio {g.p90 / e.p90:.2f})"
        )
    L = [
        "**#. Observers side by side.** `geeh observe` against `etcdctl elect -l`, medians: "
        + "; ".join(parts)
        + ". One at a time, gee-h is ahead because `etcdctl elect -l` reads the new leader "
        "after each delete event and gee-h does not (section 2). Side by side, one Delete "
        "wakes etcd's two watch streams, both clients and the driver on two cores at once, "
        "and the read etcdctl makes no longer decides the order: what does is how much CPU "
        "each client needs per event and when it gets it."
    ]
    profile = c.get("profile") or {}
    if profile:
        own = dict(profile["self"])
        thread = own.get("Thread.run (threading.py)", 0.0)
        epoll = own.get("EpollSelector.select (selectors.py)", 0.0)
        geeh_code = _share(profile, "self", "geeh/watch.py", "geeh/observe.py", "geeh/net/")
        geeh_code += _share(profile, "self", "geeh/leader.py")
        cli = _share(profile, "self", "geeh/cli/")
        L[-1] += (
            f" The profile of the side-by-side gee-h observer ({int(profile['samples'][0][1])}"
            f" busy samples): {thread:.0%} in gRPC's poller thread (Cython, shown as "
            f"`Thread.run`: it takes each message off gRPC's completion queue and wakes the "
            f"event loop through a socket), {epoll:.0%} in the event loop's `epoll` "
            f"call, {geeh_code:.0%} in gee-h's own observer path (the stream "
            f"reader, `WatchHub.received`, the observation's bookkeeping) and {cli:.0%} in "
            "the command printing the lines. gee-h's own share is small and already free of "
            "reads and copies; the thread hop inside grpcio's asyncio transport is what a "
            "Go client does not pay, and it is not gee-h's to remove."
        )
    side = s[(CONCURRENT, GEEH)].median / s[(CONCURRENT, ETCDCTL)].median
    alone = s[(SEQUENTIAL, GEEH)].median / s[(SEQUENTIAL, ETCDCTL)].median
    if side >= 0.95:
        L[-1] += " Side by side, a user sees about the same latency from either."
    elif side > alone:
        L[-1] += (
            f" Side by side the advantage shrinks (ratio {alone:.2f} -> {side:.2f}), and it "
            "moves from run to run with whatever else the two cores are doing."
        )
    L.append("")
    return L


def fleet_finding(data: dict[str, Any]) -> list[str]:
    fleets = data.get("fleet")
    if not fleets:
        return []
    from geeh.watch import PROBE_IDLE, PROBE_TIMEOUT

    rows = []
    by = {(f.impl, f.n): f for f in fleets}
    for n in sorted({f.n for f in fleets}):
        g, e = by.get((GEEH, n)), by.get((ETCDCTL, n))
        if g and e:
            rows.append(
                f"{n} observers: {g.per_second:.2f} vs {e.per_second:.2f} messages a second, "
                f"etcd at {g.cpu_share:.2%} vs {e.cpu_share:.2%} of a core"
            )
    bound = PROBE_IDLE + PROBE_TIMEOUT
    L = [
        "**#. The price of the 5 s bound, in a fleet.** gee-h against etcdctl (section 5b): "
        + "; ".join(rows)
        + f". Each idle gee-h observer sends one progress request per {PROBE_IDLE:g} s of "
        f"silence and leaves a member that has not answered within {PROBE_TIMEOUT:g} s: a "
        f"frozen member is left within {bound:g} s. Why not HTTP/2 keepalive pings instead: "
        "etcd's server accepts a ping at most every 5 s (`--grpc-keepalive-min-time`, 5 s by "
        "default, and only while a stream is open; three earlier pings with no data sent in "
        "between earn a GOAWAY `too_many_pings`), and a ping every P seconds with a reply "
        "timeout T leaves a frozen member only after up to P + T, more than 5 s for any T. "
        "Any check that keeps the bound needs an answer every 5 s - T: with T = 2 s (room "
        "for a loaded member before a needless move), one every 3 s, 20 a minute; pings at "
        "etcd's floor would still be 12 a minute, for a 5 s + T bound. etcdctl's own "
        "client pings every 10 s with a 6 s timeout (its 2 s `--keepalive-time` raised to "
        "gRPC-Go's 10 s minimum): 16 s to leave a frozen member. The trade is kept: the "
        "fleet's cost to etcd is the CPU share above, and a client that holds a session "
        "sends no probe at all while its keepalives answer in time (section 5c).",
        "",
    ]
    return L


def shards_finding(data: dict[str, Any]) -> list[str]:
    shards = data.get("shards")
    if not shards:
        return []
    watch = ", ".join(
        f"{s.n}: {s.per_minute(s.received, 'Watch.Watch'):.1f}/"
        f"{s.per_minute(s.sent, 'Watch.Watch'):.1f}"
        for s in shards
    )
    keep = ", ".join(f"{s.per_minute(s.received, 'Lease.LeaseKeepAlive'):.0f}" for s in shards)
    rss = ", ".join(
        f"{s.n}: {s.rss_per_election_kib:.1f} KiB ({s.held_per_election_kib:.1f} held)"
        for s in shards
        if s.n >= 1000  # below that, RSS moves in pages and arenas more than per election
    )
    wins = ", ".join(f"{s.n}: {s.win_seconds:.2f} s" for s in shards)
    return [
        "**#. Many elections on one session.** Idle, the Watch stream carried nothing at any "
        f"size (received/sent per minute, by elections held: {watch}), and the shared "
        f"session's keepalives were the same at every size ({keep} a minute): its replies "
        "prove the member alive for every watch on the stream (`Transport.covered`), so the "
        "watchdog sends no progress request, and a progress request would cover the whole "
        "stream anyway (etcd 3.5.1 and 3.4.23 answer each once, whatever the number of "
        "watches: `tests/test_idle_traffic.py`). What a held election does cost is one watch "
        "on its own key, created once: one create request and etcd's confirmation, which a "
        "30 s window that includes the campaigns shows as 2 messages per election a minute. "
        f"Time to win them all: {wins}. RSS per election: {rss}. A watch delivers into a "
        "list-backed mailbox instead of an `asyncio.Queue` (three deques and an Event), and a "
        "loss signal makes a future only for a waiter instead of holding an `asyncio.Event`: "
        "about 4.9 KiB of Python heap per held election instead of 8.8 (tracemalloc; "
        "`tests/test_idle_traffic.py` keeps it under 6.5 KiB). The rest of the RSS is "
        "outside the Python heap: C allocations and the allocator's arenas.",
        "",
    ]

"""The written part of the report: profiling findings and honest notes.

The causes were found with the profiles and experiments of this suite (pyinstrument trees in
benchmarks/results/, the what-if variants in whatif.py); the figures quoted are the ones
measured in the run that writes the report.
"""

from __future__ import annotations

import statistics
from typing import Any

from .common import ETCDCTL, GEEH, Series, ms, ratio


def _get(data: dict[str, Any], *path: Any) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _med(s: Series | None) -> str:
    return f"{ms(s.median)} ms" if s is not None and s.n else "n/a"


def slower_than_reference(data: dict[str, Any]) -> list[str]:
    """Every comparison of this run in which gee-h's median is above the reference's."""
    out = []
    for cluster in ("1-member", "3-member"):
        h = _get(data, f"handoff-process-{cluster}")
        if h and h[GEEH].median > h[ETCDCTL].median:
            out.append(
                f"process hand-off on {cluster} etcd ({_med(h[GEEH])} vs {_med(h[ETCDCTL])})"
            )
        o = _get(data, f"observers-{cluster}")
        if o:
            for kind in (GEEH, "in-process"):
                if o[kind].median > o[ETCDCTL].median:
                    out.append(
                        f"observer `{kind}` on {cluster} etcd ({_med(o[kind])} vs "
                        f"{_med(o[ETCDCTL])})"
                    )
        i = _get(data, f"handoff-inproc-{cluster}")
        if i and i["floor"].median > i["floor-go"].median:
            out.append(
                f"the bare watch-event floor on {cluster} etcd (gee-h transport "
                f"{_med(i['floor'])} vs `etcdctl watch` {_med(i['floor-go'])})"
            )
    return out


def _scale_step(data: dict[str, Any]) -> str:
    sc = _get(data, "scale", "results")
    if not sc:
        return ""
    rows = {(r.waiting, r.processes): r for r in sc}
    parts = []
    for processes in (1, 4):
        one, ten, thousand = (rows.get((n, processes)) for n in (1, 10, 1000))
        if one and ten and thousand:
            parts.append(
                f"{processes} process{'es' if processes > 1 else ''}: {_med(one.latency)} "
                f"(1 waiting, {statistics.mean(one.unary):.1f} requests), "
                f"{_med(ten.latency)} (10 waiting, {statistics.mean(ten.unary):.1f}), "
                f"{_med(thousand.latency)} (1000 waiting, {statistics.mean(thousand.unary):.1f})"
            )
    return "; ".join(parts)


def _whatif(data: dict[str, Any], cluster: str, waiting: int) -> str:
    w = _get(data, f"whatif-{cluster}", waiting)
    if not w:
        return "n/a"
    base = w["as is"]
    return ", ".join(f"{name} {_med(s)} ({ratio(s.median, base.median)})" for name, s in w.items())


def _switch_finding(data: dict[str, Any]) -> list[str]:
    sw = data.get("switch") or {}
    small = sw.get("10 waiting, right after a member switch")
    large = sw.get("1000 waiting, right after a member switch")
    if not small or not large or not small.n or not large.n:
        return ["**4. Member switch.** Not measured in this run."]
    if large.median > 3 * small.median:
        return [
            "**4. Resuming watches after a member switch is O(watches) sequential round "
            f"trips.** Section 4b: {_switch(data)}. When the watch stream re-opens on "
            "another member, `WatchHub.before_open()` (`src/geeh/watch.py`) checks the "
            "watches for compaction one read at a time; a client with 1000 waiting "
            "candidates has about 2000 watches, so no watch exists for about a second and "
            "every hand-off in that time waits. Fix: one serializable `count_only` Range "
            "at `revision = min(next_revision) - 1` (compaction is one global revision); "
            "only if that fails, check per distinct `next_revision`, concurrently."
        ]
    return [
        "**4. Member switch: no longer grows with the number of watches.** Section 4b: "
        f"{_switch(data)}. An earlier version of `WatchHub.before_open()` checked every "
        "watch for compaction with one read each, in sequence, before re-creating them: "
        "about 1.2-1.4 s with 1000 waiting candidates on a client in this suite. It now "
        "checks oldest first and stops at the first read that passes, usually one read. "
        "What remains, about 100 ms whatever the number of watches, is etcd's: a watch "
        "created from a past revision is caught up by the server's unsynced-watcher loop, "
        "which runs every 100 ms. A client that must hand over faster after a switch "
        "would re-read its predecessor (one point read per waiting campaign) instead of "
        "replaying the watch from its old revision. Also seen while building this suite: "
        "2000 campaigns started at once on one client of a 3-member cluster pushed a "
        "request past the 2 s attempt timeout and the client left a healthy member; the "
        "what-if and switch runs therefore join candidates 100 at a time."
    ]


def _switch(data: dict[str, Any]) -> str:
    sw = data.get("switch")
    if not sw:
        return "n/a"
    return "; ".join(f"{label}: median {_med(s)}" for label, s in sw.items())


def _fanout(data: dict[str, Any]) -> str:
    rows = list(_get(data, "scale", "results") or []) + list(data.get("scale-3-member") or [])
    parts = [
        f"{r.waiting} waiting in {r.processes} proc ({r.cluster}): "
        f"{statistics.mean(r.received):.1f}"
        for r in rows
        if r.waiting in (1, 1000) and r.received
    ]
    return "; ".join(parts) or "n/a"


def _cost(data: dict[str, Any], role: str, impl: str, ttl: int | None) -> str:
    for r in data.get("cost") or []:
        if r.role == role and r.impl == impl and r.ttl == ttl:
            watch = r.messages.get("Watch.Watch", 0.0) * 60 / r.seconds
            return f"{r.per_minute:.1f}/min (watch stream {watch:.1f}/min)"
    return "n/a"


def findings(data: dict[str, Any]) -> list[str]:
    slower = slower_than_reference(data)
    L = ["### Findings", ""]
    if slower:
        L.append(
            "Where gee-h's median was above the reference in this run: " + "; ".join(slower) + "."
        )
    else:
        L.append(
            "In this run gee-h's median was at or below the reference in every side-by-side "
            "comparison (processes and in-process, 1- and 3-member etcd)."
        )
    L += [
        "",
        "The profiles, the what-if runs and the member-switch run point at these causes, "
        "in order of effect on a hand-off:",
        "",
        "**1. A read and a second commit on the hand-off path, for every queue longer "
        "than one.** `Leadership.resign()` sends the guarded Delete (Txn) and then, because "
        "the campaign owns its session, a LeaseRevoke: two raft commits (two fsyncs). The "
        "successor, woken by the Delete event, reads once more (`Campaign._wait`'s Range "
        "with `max_create_revision`) unless it was second in line with no older key when it "
        "started waiting. That read is linearizable: etcd first confirms its read index "
        "with the raft leader, then waits until everything committed before it is applied, "
        "which includes the resigner's LeaseRevoke, in flight at exactly that moment; and "
        "at 1000 candidates the read itself costs etcd more than a millisecond (below). "
        "The profile with 1 waiting shows the resign's two `Transport.call`s as the largest "
        "Python share of the window; the scale table shows the step from 1 waiting (2 "
        "requests, no read) to 10 and more (3 requests): "
        f"{_scale_step(data) or 'n/a'}. This step is why the 1000-waiting figure is more "
        "than 1.5 times the 2-candidate one: the queue length itself costs little (one "
        "process wakes per hand-off; the 1000-waiting figure is above the 10-waiting one "
        "mostly by the server-side read cost).",
        "",
        "- Fix A, `src/geeh/leadership.py`, `Leadership.resign()`: when `self._owns_session`, "
        "resign with one `LeaseRevoke` of the session's lease instead of the guarded "
        "Txn-Delete followed by the revoke. etcd deletes the candidate key in the same "
        "commit (watchers get the same DELETE event); the lease belongs to this campaign "
        "alone, so nothing else is deleted and fencing is unchanged. Keep the state on "
        "failure as today (set `_resigned` only after the revoke succeeded, and let the "
        "error propagate instead of `Session.close()`'s suppression), and treat NotFound "
        '"requested lease not found" as done, so a retry stays idempotent. With a shared '
        "session keep the guarded Txn. Saves one request and one commit per hand-off and "
        "the resigner returns one round trip sooner.",
        "- Fix B, `src/geeh/election.py`, `Campaign._wait()`: send the wait `RangeRequest` "
        "with `serializable=True`. It is safe for this decision: the code already requires "
        "our own key in the answer, so the read is at a revision at or after our create "
        "revision; a key created before ours can never appear later, so a stale answer can "
        "only show more older keys, never fewer, i.e. it can delay a win but never grant "
        "one wrongly. It saves the read-index round trip (3-member: a heartbeat round to "
        "the followers) and the wait for in-flight commits.",
        "- Fix C, `src/geeh/election.py`, `Campaign._wait()`: read one hand-off ahead. Read "
        "`limit=3` (our key, predecessor P1, P1's predecessor P2) and watch the key range "
        "spanning P2, P1 and our key (NOPUT, as now). When P2 is deleted (P1 now leads), "
        "read again at once: off the critical path, since the new leader already leads; "
        "that read finds P1 the only older key (`len == 2`, `more` false), and when P1 is "
        "then deleted we lead with no read, exactly like today's second-in-line path. If "
        "P1 goes first (it withdrew while waiting) or both go in one batch, read again as "
        "now. The successor of a hand-off then never reads; requests per hand-off stay 3 "
        "(2 with fix A): the third in line makes the read. `benchmarks/whatif.py` "
        "(`_wait_ahead`) is a working sketch of exactly this, checked after every "
        "hand-off for a double win.",
        "- Measured, patched in at run time (what-if tables): 1-member, 10 waiting: "
        f"{_whatif(data, '1-member', 10)}; 3-member, 10 waiting: "
        f"{_whatif(data, '3-member', 10)}; 1000 waiting: 1-member "
        f"{_whatif(data, '1-member', 1000)}, 3-member {_whatif(data, '3-member', 1000)}; "
        f"1 waiting (no read, so only fix A applies): 1-member "
        f"{_whatif(data, '1-member', 1)}.",
        "",
        "**2. The per-event cost of Python's gRPC aio stream.** The bare floor, a Delete "
        "plus one watch event, is slower through gee-h's transport than through "
        "`etcdctl watch` (section 1b). Each stream message goes through "
        "`ResumableStream._read` (`src/geeh/failover.py`: `async for response in call`, "
        "i.e. grpc.aio's `_fetch_stream_responses` async generator around `_read`), then "
        "`WatchHub.received` -> `Watch._deliver` (an `asyncio.Queue.put_nowait`) -> "
        "`Watch.next()` in a separate task (`_deletions`, started by "
        "`_predecessor_deleted` in `src/geeh/election.py` per wait, together with an "
        "`asyncio.wait` on two futures): three to four event-loop iterations from the "
        "socket to the campaign. (In-process the floor also shares the event loop with the "
        "Delete's own response.) Proposals, smaller effect: in `_predecessor_deleted()`, "
        "wait on the watch directly with a done-callback on `gone` that cancels the wait, "
        "instead of a `_deletions` task plus `asyncio.wait` (one task and one loop hop "
        "fewer per wait); in `src/geeh/watch.py`, `Watch`, replace the per-watch "
        "`asyncio.Queue` by a deque plus one waiter future; in `ResumableStream._read`, "
        "loop on `await call.read()` instead of `async for`, which skips the async-"
        "generator layer per message. Tens of microseconds each; the process-level "
        "comparisons show gee-h ahead of `etcdctl` anyway, because Go's recipe makes more "
        "round trips (sections 1a and 2).",
        "",
        "**3. Idle traffic from the watch-stream probe.** `WatchHub.watchdog` "
        "(`src/geeh/watch.py`) sends a progress request whenever the watch stream has been "
        "silent for `PROBE_IDLE` = 3 s: 20 messages a minute per client, for leaders, "
        "waiting candidates and observers alike (all of them hold a watch). Idle cost "
        f"(section 5): gee-h leader at TTL 60 s {_cost(data, 'leader', GEEH, 60)}, "
        f"`etcdctl elect` {_cost(data, 'leader', ETCDCTL, None)}; gee-h observer "
        f"{_cost(data, 'observer', GEEH, None)}, `etcdctl elect -l` "
        f"{_cost(data, 'observer', ETCDCTL, None)}. Fix: let the watchdog count any answer "
        "from the same member as proof of life, not only the watch stream's "
        "(`ResumableStream.heard` of the Lessor's keepalive stream, and unary responses in "
        "`Transport.call`: a per-endpoint `last_heard` on the Transport), and probe only "
        "when nothing at all came for `PROBE_IDLE`; a campaign's own session (keepalive "
        "every TTL/3) then makes the probe unnecessary. For pure observers, a longer idle "
        "period (10 s) would still detect a frozen member well before gRPC's 15 s "
        "keepalive.",
        "",
        *_switch_finding(data),
        "",
        "**Server-side cost of the wait read at 1000.** The wait read (sort by create "
        "revision with `max_create_revision`, limit 2) makes etcd fetch every key under "
        "the prefix and sort them before applying the limit (etcd ignores the limit for "
        "sorted or revision-filtered ranges): measured on this machine about 0.55 ms at "
        "10 or 100 keys and 1.8 ms at 1000. Go's recipe sends the same query after every "
        "delete. Fix C takes it off the hand-off path (the third in line pays it while the "
        "new leader already leads).",
        "",
        "**5. Watch fan-out when many candidates share a process.** A waiter watches the "
        "key range from its predecessor's key to its own (`Campaign._wait`, the ordered "
        "two-key watch). Candidate keys are lease IDs in hex; etcd's lease IDs carry the "
        "granting member's ID in their top bits and otherwise grow with time, so key order "
        "and create order differ when joins interleave (many campaigns started at once) or "
        "leases come from different members, and such a range then spans other "
        "candidates' keys. A Delete inside it wakes that waiter too: no request "
        "(`_deletions` ignores it), but one WatchResponse, dispatch and task wake-up each. "
        f"Scale table, watch responses per hand-off: {_fanout(data)}. Fix, if it matters: "
        "one NOPUT watch per (client, election) prefix, shared by all the client's "
        "campaigns in that election and demultiplexed by key in the client (one message "
        "per Delete per client, in revision order, whatever the number of local "
        "candidates), used when a client has more than a few candidates in one election; "
        "the per-candidate range watch stays for the one-candidate case, where it never "
        "spans others' keys unless leases come from different members.",
    ]
    return L


def notes(data: dict[str, Any]) -> list[str]:
    L = [
        "- All figures are from one run on a shared 2-core VM; rerun for your own machine. "
        "Medians moved by up to about 0.5 ms between full runs here: over four full runs "
        "while this suite was written, the process-level hand-off ratio (gee-h / etcdctl) "
        "was 0.82 to 0.98 on 1-member etcd and 0.71 to 0.81 on 3-member etcd, the observer "
        "ratios 0.72 to 0.78. p99 of a few dozen trials is the tail of that run, not a "
        "bound.",
        "- In the process-level hand-off the successor is second in line (one waiting "
        "candidate). There `etcdctl elect` makes two reads after the delete event (Go's "
        "`Campaign` reads the queue again, then `etcdctl` reads its own key before "
        "printing) and gee-h none. That, not faster Python, is why gee-h's process figures "
        "are lower; per event Go's client is faster (the floor rows). Behind a longer "
        "queue gee-h also reads once (finding 1; fix C removes it).",
        "- In-process figures put the resigning leader and the successor (or the deleting "
        "driver and the observer) on one event loop: the resigner's second request and the "
        "successor's wake-up compete for it. Separate processes (section 1a) do not.",
        "- Crash failover is bounded by etcd's lease expiry: the dead leader's lease "
        "expires TTL after its last keepalive (sent every TTL/3), found by etcd's 500 ms "
        "expiry tick, so results fall between about TTL - TTL/3 and TTL + 0.5 s plus the "
        "hand-off. etcdctl cannot be compared: its session TTL is fixed at 60 s.",
        "- Scale runs use TTL 60 s so 1000 sessions' keepalives stay at 50/s; the hand-off "
        "path does not depend on the TTL. A queue of 1 is structurally cheaper (the "
        "successor was second in line when it began to wait, so it needs no read); that "
        "is why the 1-waiting column is lower than all the others.",
        "- Idle CPU is sampled with psutil at the kernel's 10 ms tick: over "
        "a short (--quick) window a value of 0.04 s/min is one tick.",
        "- Memory per candidate: RSS grows in pages and arenas, so small N says little; "
        "the 1000-candidate and tracemalloc figures are the ones to read.",
    ]
    return L

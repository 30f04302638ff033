"""Rebalancing shards: gee-h's Shards against kazoo's SetPartitioner on a real ZooKeeper.

    python -m benchmarks.partition [--quick] [--sizes 256,1024] [--out DIR]

Same N, same members, same events for both: members go 2 -> 8 (one join at a time) -> 3
(graceful leaves and SIGKILLs alternating). Each member (benchmarks/partition_worker.py)
prints when the work of a shard starts and stops; the driver stamps each line as it arrives
and rebuilds who runs what. Per event:

- seconds until balanced: every shard run by exactly one live member, shares floor/ceil;
- shard-seconds without work running (for a SIGKILL, from the kill);
- shards that moved, and the fewest the new shares allow;
- messages the server received (etcd: its gRPC counters; ZooKeeper: mntr packets).

Then, idle with 3 members: messages per second, and each member's RSS (per shard: the
difference between the sizes). etcd and ZooKeeper (Debian's package, started here on a free
port with a temporary data directory) run side by side; TTL and ZooKeeper session timeout
are the same. Writes partition.json and partition.md under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from geeh.testing import free_port

from .common import RESULTS, Proc, kill_all, local_etcd, scrape

TTL = 4  # lease TTL and ZooKeeper session timeout, seconds
BOUNDARY = 1.0  # SetPartitioner's time_boundary (default 30 s)
ZK_BIN = "/usr/share/zookeeper/bin/zkServer.sh"
PLAN = ["join"] * 6 + ["leave", "kill", "leave", "kill", "leave"]


@dataclass
class Event:
    kind: str
    members: int  # after the event
    seconds: float = float("nan")
    unowned_shard_seconds: float = 0.0
    moved: int = 0
    minimum: int = 0
    messages: float = 0.0
    unowned_in_etcd: float | None = None  # gee-h: shard-seconds with no key in the line


@dataclass
class Run:
    system: str
    n: int
    events: list[Event] = field(default_factory=list)
    idle_messages_per_s: float = 0.0
    rss_kib: list[int] = field(default_factory=list)


class ZooKeeper:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="geeh-bench-zk-")
        self.port = free_port()
        os.makedirs(os.path.join(self.dir, "data"))
        with open(os.path.join(self.dir, "zoo.cfg"), "w") as f:
            f.write(
                f"tickTime=1000\ndataDir={self.dir}/data\nclientPort={self.port}\n"
                "4lw.commands.whitelist=mntr\nadmin.enableServer=false\nmaxClientCnxns=0\n"
            )
        self.proc = subprocess.Popen(
            [ZK_BIN, "start-foreground", os.path.join(self.dir, "zoo.cfg")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "zk_server_state" not in self.mntr_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("ZooKeeper did not start")
            time.sleep(0.2)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def mntr_text(self) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"mntr")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode()
        except OSError:
            return ""

    def messages(self) -> float:
        for line in self.mntr_text().splitlines():
            if line.startswith("zk_packets_received"):
                return float(line.split()[1])
        return 0.0

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Members:
    """The member processes, and who runs which shard as their lines tell."""

    def __init__(self, system: str, endpoint: str, name: str, n: int) -> None:
        self.system, self.endpoint, self.name, self.n = system, endpoint, name, n
        self.procs: dict[str, Proc] = {}
        self.read: dict[str, int] = {}
        self.holders: dict[int, set[str]] = {s: set() for s in range(n)}
        self.log: list[tuple[float, str, int, int]] = []  # (stamp, member, shard, +1/-1)
        self.count = 0

    async def join(self) -> float:
        label = f"m{self.count}"
        self.count += 1
        argv = [sys.executable, "-m", "benchmarks.partition_worker", self.system]
        argv += [self.endpoint, self.name, str(self.n), str(TTL), label, str(BOUNDARY)]
        proc = self.procs[label] = Proc(argv, f"{self.system}-{label}", stdin=True)
        self.read[label] = 0
        stamp, _, index = await proc.wait_line(lambda line: line == b"joining", timeout=60)
        self.read[label] = index + 1
        return stamp

    def pump(self) -> None:
        for label, proc in self.procs.items():
            lines = proc.lines
            while self.read[label] < len(lines):
                stamp, line = lines[self.read[label]]
                self.read[label] += 1
                if line[:2] in (b"+ ", b"- "):
                    shard, delta = int(line[2:]), 1 if line[:1] == b"+" else -1
                    self.log.append((stamp, label, shard, delta))
                    (self.holders[shard].add if delta > 0 else self.holders[shard].discard)(label)

    async def leave(self, label: str) -> float:
        stamp = time.monotonic()
        self.procs[label].send("leave")
        await self.procs[label].wait_line(lambda line: line == b"left", timeout=60)
        await self.procs[label].wait_exit(10)
        self.pump()
        del self.procs[label]
        return stamp

    async def kill(self, label: str) -> float:
        proc = self.procs[label]
        stamp = time.monotonic()
        proc.signal(signal.SIGKILL)
        await proc.wait_exit(10)
        await asyncio.sleep(0.1)  # the reader thread drains the pipe to EOF
        self.pump()
        for shard, holders in self.holders.items():
            if label in holders:  # its work stopped when it died
                holders.discard(label)
                self.log.append((stamp, label, shard, -1))
        del self.procs[label]
        return stamp

    def owners(self) -> dict[int, str] | None:
        """Shard -> its one live owner, if every shard has exactly one and shares are even."""
        live = set(self.procs)
        owners = {}
        for shard, holders in self.holders.items():
            if len(holders) != 1 or not holders <= live:
                return None
            owners[shard] = next(iter(holders))
        counts = [sum(1 for o in owners.values() if o == m) for m in live]
        low, high = self.n // len(live), -(-self.n // len(live))
        return owners if all(low <= c <= high for c in counts) else None

    async def balanced(self, timeout: float) -> tuple[float, dict[int, str]]:
        """Wait for balance; returns the stamp of the line that made it, and the owners."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            owners = self.owners()
            if owners is not None:
                return max((e[0] for e in self.log), default=time.monotonic()), owners
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.system}: not balanced after {timeout}s")
            await asyncio.sleep(0.02)

    def unowned(self, since: float, until: float, before: dict[int, set[str]]) -> float:
        """Shard-seconds in [since, until] with no member running the shard."""
        count = {s: len(h) for s, h in before.items()}
        idle_since = {s: since for s, c in count.items() if c == 0}
        total = 0.0
        for stamp, _, shard, delta in sorted(e for e in self.log if since <= e[0] <= until):
            count[shard] += delta
            if count[shard] == 0:
                idle_since[shard] = stamp
            elif delta > 0 and count[shard] == 1 and shard in idle_since:
                total += stamp - idle_since.pop(shard)
        return total + sum(until - t for t in idle_since.values())

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()


class EtcdOwners:
    """gee-h's shards as etcd has them: when each shard had no key in its line at all."""

    def __init__(self, client: Any, name: str) -> None:
        self.prefix = f"{name}/".encode()
        self.lines: dict[bytes, int] = {}
        self.empty_since: dict[bytes, float] = {}
        self.gaps: list[tuple[float, float]] = []  # (from, to), on time.monotonic()
        self.client = client
        self.task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        from geeh.keys import prefix_end

        core = self.client.core
        with core.watches.watch(self.prefix, range_end=prefix_end(self.prefix)) as watch:
            async for batch in watch:
                now = time.monotonic()
                for e in batch.events:
                    head, _, tail = e.kv.key[len(self.prefix) :].partition(b"/")
                    if not head.isdigit() or not tail:
                        continue
                    count = self.lines.get(head, 0) + (-1 if e.type == e.DELETE else 1)
                    self.lines[head] = count
                    if count == 0:
                        self.empty_since[head] = now
                    elif count == 1 and head in self.empty_since:
                        self.gaps.append((self.empty_since.pop(head), now))

    def unowned(self, since: float, until: float) -> float:
        spans = [*self.gaps, *((t, until) for t in self.empty_since.values())]
        return sum(max(0.0, min(b, until) - max(a, since)) for a, b in spans)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def fewest_moves(n: int, before: dict[int, str], members: list[str]) -> int:
    """The fewest shards that must move for even shares among ``members``."""
    held = [sum(1 for o in before.values() if o == m) for m in members]
    base, extra = divmod(n, len(members))
    kept = sum(min(h, base) for h in held)
    bonus = sorted((min(h, base + 1) - min(h, base) for h in held), reverse=True)
    return n - kept - sum(bonus[:extra])


async def one_run(system: str, n: int, endpoint: str, messages: Any, idle: float) -> Run:
    import geeh

    run = Run(system, n)
    members = Members(system, endpoint, f"bench-{system}-{n}-{os.getpid()}", n)
    limit = 60.0 + 2 * TTL
    client = geeh.Client(endpoint) if system == "geeh" else None
    witness = None
    if client is not None:
        await client.connect()
        witness = EtcdOwners(client, members.name)
    try:
        for _ in range(2):
            await members.join()
        _, owners = await members.balanced(limit)
        for i, kind in enumerate(PLAN):
            await asyncio.sleep(1.0)  # let the last event's traffic end
            members.pump()
            snapshot = {s: set(h) for s, h in members.holders.items()}
            m0 = messages()
            print(f"    {system} N={n}: {kind} ({i + 1}/{len(PLAN)})", flush=True)
            if kind == "join":
                stamp = await members.join()
            else:
                label = sorted(members.procs, key=lambda x: int(x[1:]))[0]
                stamp = await (members.leave(label) if kind == "leave" else members.kill(label))
                if kind == "leave":
                    stamp = min([stamp, *(e[0] for e in members.log if e[0] >= stamp)])
            done, after = await members.balanced(limit)
            done = max(done, stamp)
            event = Event(kind, len(members.procs))
            event.seconds = done - stamp
            event.unowned_shard_seconds = members.unowned(stamp, done, snapshot)
            event.moved = sum(1 for s in range(n) if after[s] != owners.get(s))
            event.minimum = fewest_moves(n, owners, list(members.procs))
            if witness is not None:
                event.unowned_in_etcd = witness.unowned(stamp, done)
            await asyncio.sleep(0.5)
            event.messages = messages() - m0
            run.events.append(event)
            owners = after
        await asyncio.sleep(2.0)
        m0, t0 = messages(), time.monotonic()
        await asyncio.sleep(idle)
        run.idle_messages_per_s = (messages() - m0) / (time.monotonic() - t0)
        for proc in members.procs.values():
            start = len(proc.lines)
            proc.send("rss")
            _, line, _ = await proc.wait_line(lambda line: line.startswith(b"rss "), start)
            run.rss_kib.append(int(line.split()[1]))
    finally:
        members.close()
        if witness is not None:
            await witness.close()
        if client is not None:
            await client.close()
    return run


def etcd_messages(url: str) -> Any:
    return lambda: sum(scrape(url).values())


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def summary(runs: list[Run]) -> list[str]:
    """One row per system and N: graceful events, kills, idle cost."""
    out = [
        "| system | N | graceful: median / max s to balanced | graceful: shard-s without work "
        "| graceful: shard-s without owner (etcd) | kill: max s to balanced | kill: shard-s "
        "without work per moved shard | moved / fewest (all events) | messages per event "
        "(median) | idle messages/s | RSS per member (mean), KiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        graceful = [e for e in r.events if e.kind != "kill"]
        kills = [e for e in r.events if e.kind == "kill"]
        owner = (
            "-" if r.system != "geeh" else f"{sum(e.unowned_in_etcd or 0.0 for e in graceful):.2f}"
        )
        per_moved = sum(e.unowned_shard_seconds for e in kills) / max(
            1, sum(e.moved for e in kills)
        )
        out.append(
            f"| {r.system} | {r.n} | {_median([e.seconds for e in graceful]):.2f} / "
            f"{max(e.seconds for e in graceful):.2f} | "
            f"{sum(e.unowned_shard_seconds for e in graceful):.1f} | {owner} | "
            f"{max(e.seconds for e in kills):.2f} | {per_moved:.2f} | "
            f"{sum(e.moved for e in r.events)} / {sum(e.minimum for e in r.events)} | "
            f"{_median([e.messages for e in r.events]):.0f} | {r.idle_messages_per_s:.1f} | "
            f"{sum(r.rss_kib) / max(1, len(r.rss_kib)):.0f} |"
        )
    return out


def markdown(runs: list[Run]) -> str:
    sizes = sorted({r.n for r in runs})
    out = [
        "## Rebalancing shards: gee-h against kazoo's SetPartitioner on ZooKeeper",
        "",
        f"`python -m benchmarks.partition` (N = {', '.join(map(str, sizes))}). Members (one "
        "process each) go 2 -> 8 (one join at a time) -> 3 (leave, SIGKILL, leave, SIGKILL, "
        f"leave). gee-h: `client.shards(name, N).run(...)`, TTL {TTL} s, on a 1-member etcd. "
        "kazoo: `SetPartitioner` (time_boundary "
        f"{BOUNDARY:g} s; its default is 30 s), session timeout {TTL} s, on Debian's "
        "ZooKeeper 3.8 started by the benchmark. Each member prints when the work of a "
        "shard starts and stops; the driver stamps each line as it arrives. *Balanced*: every "
        "shard run by exactly one live member, shares floor/ceil. *Without work*: "
        "shard-seconds with no member running the shard (for a SIGKILL, from the kill). "
        "*Without owner (etcd)*: shard-seconds with no key at all in the shard's line, from a "
        "watch on etcd. *Fewest*: the fewest moves the new shares allow. *Messages*: what the "
        "server received during the event (etcd's gRPC counters, ZooKeeper's mntr packets).",
        "",
        *summary(runs),
        "",
        "Every event:",
        "",
        "| system | N | event | members | s to balanced | shard-s without work | "
        "shard-s without owner (etcd) | moved / fewest | messages |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        for e in r.events:
            owner = "-" if e.unowned_in_etcd is None else f"{e.unowned_in_etcd:.2f}"
            out.append(
                f"| {r.system} | {r.n} | {e.kind} | {e.members} | {e.seconds:.2f} | "
                f"{e.unowned_shard_seconds:.2f} | {owner} | {e.moved} / {e.minimum} | "
                f"{e.messages:.0f} |"
            )
    return "\n".join(out) + "\n"


def load(path: str) -> list[Run]:
    with open(path) as f:
        raw = json.load(f)
    return [Run(**{**r, "events": [Event(**e) for e in r["events"]]}) for r in raw]


async def main_async(sizes: list[int], idle: float, systems: list[str]) -> list[Run]:
    runs: list[Run] = []
    async with local_etcd() as cluster:
        zk = await asyncio.to_thread(ZooKeeper) if "kazoo" in systems else None
        try:
            for n in sizes:
                for system in systems:
                    if system == "geeh":
                        counter = etcd_messages(cluster.client_urls[0])
                        endpoint = cluster.endpoints[0]
                    else:
                        assert zk is not None
                        counter, endpoint = zk.messages, zk.endpoint
                    runs.append(await one_run(system, n, endpoint, counter, idle))
        finally:
            kill_all()
            if zk is not None:
                zk.close()
    return runs


def write(runs: list[Run], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "partition.json"), "w") as f:
        json.dump([asdict(r) for r in runs], f, indent=1)
    with open(os.path.join(out, "partition.md"), "w") as f:
        f.write(markdown(runs))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partition")
    parser.add_argument("--quick", action="store_true", help="N=64 only, a short idle window")
    parser.add_argument("--sizes", default="256,1024", help="shard counts (default: 256,1024)")
    parser.add_argument("--systems", default="geeh,kazoo", help="geeh, kazoo or both")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument("--out", default=RESULTS, help="where to write the results")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite partition.md from partition.json"
    )
    args = parser.parse_args()
    if args.report_only:
        write(load(os.path.join(args.out, "partition.json")), args.out)
        return 0
    sizes = [64] if args.quick else [int(s) for s in args.sizes.split(",")]
    idle = 5.0 if args.quick else args.idle
    runs = asyncio.run(main_async(sizes, idle, args.systems.split(",")))
    write(runs, args.out)
    sys.stdout.write(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

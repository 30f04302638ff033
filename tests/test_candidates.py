"""The queue view: Election.candidates() and `geeh candidates`, on 1 and 3 members."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import ETCD_BINARIES
from support.wait import eventually, within

import geeh
from geeh.testing import LocalEtcdCluster


def geeh_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "geeh.cli", *args]


async def run_geeh(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *geeh_command(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await within(process.communicate(), 30, f"geeh {' '.join(args)}")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def line_of_three(client: geeh.Client, name: str) -> AsyncIterator[list[geeh.Leadership]]:
    """a leads; b (TTL 7) and c (TTL 9) wait behind it, in that order. Yields [a]."""
    election = client.election(name)
    a = await within(election.campaign(b"a", ttl=5), 5, "a")
    waiting = []
    for value, ttl in ((b"b", 7), (b"c\n\x1b[2J", 9)):
        waiting.append(asyncio.ensure_future(election.campaign(value, ttl=ttl)))

        async def joined(n: int = len(waiting) + 1) -> bool:
            return len(await election.candidates(ttl=False)) == n

        await eventually(joined, what=f"{value!r} in line")
    try:
        yield [a]
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await a.resign()


async def test_candidates_in_order_with_ttls(etcd: LocalEtcdCluster, name: str) -> None:
    async with geeh.Client(etcd.endpoints) as client, line_of_three(client, name) as (a,):
        election = client.election(name)
        line = await election.candidates()
        assert [c.value for c in line] == [b"a", b"b", b"c\n\x1b[2J"]
        assert [c.position for c in line] == [0, 1, 2]
        assert line[0].key == a.key and line[0].token == a.token and line[0].lease == a.lease
        assert line[0].token < line[1].token < line[2].token
        assert all(isinstance(c, geeh.Leader) for c in line)
        for c, granted in zip(line, (5, 7, 9), strict=True):
            assert c.ttl is not None and 0 < c.ttl <= granted
        leader = await election.leader()
        assert leader is not None and leader.key == line[0].key
        assert [c.ttl for c in await election.candidates(ttl=False)] == [None, None, None]

        # A key someone put under the prefix by hand, with no lease: in line, no TTL.
        await client.put(election.prefix + b"by-hand", b"x")
        try:
            last = (await election.candidates())[-1]
            assert (last.key, last.lease, last.ttl, last.position) == (
                election.prefix + b"by-hand", 0, None, 3,
            )  # fmt: skip
        finally:
            await client.delete(election.prefix + b"by-hand")


async def test_geeh_candidates(etcd: LocalEtcdCluster, name: str) -> None:
    endpoints = ["--endpoints", etcd.endpoints[0]]
    status, out, err = await run_geeh("candidates", name, *endpoints)
    assert (status, err) == (0, "")
    assert out.splitlines() == ["POS  KEY  VALUE  TOKEN  LEASE  TTL", "(no candidates)"]
    async with geeh.Client(etcd.endpoints) as client, line_of_three(client, name):
        line = await client.election(name).candidates()
        status, out, err = await run_geeh("candidates", name, *endpoints)
        assert (status, err) == (0, "")
        header, *rows = out.splitlines()
        assert header.split() == ["POS", "KEY", "VALUE", "TOKEN", "LEASE", "TTL"]
        assert len(rows) == 3
        for row, c in zip(rows, line, strict=True):
            cells = row.split()
            assert cells[:2] == [str(c.position), c.key_str]
            assert cells[-3:-1] == [str(c.token), format(c.lease, "x")]
            assert cells[-1].endswith("s") and 0 < int(cells[-1][:-1]) <= 9
        assert "\x1b" not in out and r"c\n\x1b[2J" in rows[2]  # a value cannot draw

        status, out, err = await run_geeh("candidates", name, "--json", *endpoints)
        assert (status, err) == (0, "")
        record = json.loads(out)
        assert record["election"] == name and record["revision"] >= line[-1].token
        assert [
            (c["position"], c["key"], c["value"], c["token"], c["lease"])
            for c in record["candidates"]
        ] == [(c.position, c.key_str, c.value_str, c.token, c.lease) for c in line]
        assert all(0 < c["ttl"] <= 9 for c in record["candidates"])


async def test_watch_appends_a_snapshot_per_change(etcd: LocalEtcdCluster, name: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *geeh_command("candidates", name, "--watch", "--json", "--endpoints", etcd.endpoints[0]),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None

    async def snapshot() -> list[str]:
        assert process.stdout is not None
        line = await within(process.stdout.readline(), 15, "a snapshot")
        return [c["value"] for c in json.loads(line)["candidates"]]

    try:
        assert await snapshot() == []
        async with geeh.Client(etcd.endpoints) as client:
            election = client.election(name)
            a = await election.campaign(b"a", ttl=5)
            assert await snapshot() == ["a"]
            b = asyncio.ensure_future(election.campaign(b"b", ttl=5))
            assert await snapshot() == ["a", "b"]
            await a.proclaim(b"a2")
            assert await snapshot() == ["a2", "b"]
            await a.resign()
            assert await snapshot() == ["b"]
            await (await b).resign()
            assert await snapshot() == []
        process.send_signal(signal.SIGINT)
        assert await within(process.wait(), 10, "exit") == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_watch_on_a_terminal_redraws(etcd: LocalEtcdCluster, name: str) -> None:
    leader, follower = os.openpty()
    process = await asyncio.create_subprocess_exec(
        *geeh_command("candidates", name, "-w", "-n", "0.2", "--endpoints", etcd.endpoints[0]),
        stdout=follower,
    )
    os.close(follower)
    seen = b""

    async def until(count: int) -> None:
        nonlocal seen
        while seen.count(b"\x1b[H\x1b[2J") < count:
            seen += await within(asyncio.to_thread(os.read, leader, 4096), 15, "a redraw")

    try:
        async with geeh.Client(etcd.endpoints) as client:
            a = await client.election(name).campaign(b"a", ttl=5)
            await until(1)
            # Redrawn by the clock too, with no change: the TTL counts down on screen.
            await until(3)
            await a.resign()
        screens = seen.decode().split("\x1b[H\x1b[2J")[1:]
        assert screens[0].startswith(f"Every 0.2s: geeh candidates {name}    revision ")
        assert "POS" in screens[0]
        process.send_signal(signal.SIGINT)
        assert await within(process.wait(), 10, "exit") == 0
    finally:
        os.close(leader)
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- on 3 members, with one down ----------------------------------------------------------------


@pytest.fixture(scope="module")
def three() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster(3, etcd_bin=ETCD_BINARIES["3.5"]) as cluster:
        yield cluster


async def test_candidates_with_a_member_down(three: LocalEtcdCluster, name: str) -> None:
    async with (
        geeh.Client(three.endpoints) as client,
        geeh.Client(list(reversed(three.endpoints))) as other,
    ):
        a = await within(client.election(name).campaign(b"a", ttl=5), 5, "a")
        b = asyncio.ensure_future(other.election(name).campaign(b"b", ttl=5))
        try:

            async def two() -> bool:
                return len(await client.election(name).candidates(ttl=False)) == 2

            await eventually(two, what="b in line")
            pinned = three.endpoints.index(client.core.transport.endpoint)
            three.kill(pinned)
            try:
                line = await within(client.election(name).candidates(), 10, "candidates")
                assert [c.value for c in line] == [b"a", b"b"]
                assert all(c.ttl is not None and c.ttl > 0 for c in line)
                healthy = [e for i, e in enumerate(three.endpoints) if i != pinned]
                status, out, err = await run_geeh(
                    "candidates", name, "--json", "--endpoints", ",".join(three.endpoints)
                )
                assert (status, err) == (0, "")
                assert [c["value"] for c in json.loads(out)["candidates"]] == ["a", "b"]
                status, out, _ = await run_geeh("candidates", name, "--endpoints", healthy[0])
                assert status == 0 and len(out.splitlines()) == 3
            finally:
                await asyncio.to_thread(three.restart, pinned)
            await a.resign()
            await (await within(b, 10, "b elected")).resign()
        finally:
            b.cancel()
            await asyncio.gather(b, return_exceptions=True)


async def test_a_key_without_a_lease_is_flagged_as_blocking(
    etcd: LocalEtcdCluster, name: str
) -> None:
    """A plain put under the prefix (what `geeh put --fenced` now refuses) leads forever:
    `geeh candidates` and `geeh leader` flag it instead of showing it as a candidate."""
    endpoints = ["--endpoints", etcd.endpoints[0]]
    flag = "not a candidate: blocks this election"
    async with geeh.Client(etcd.endpoints) as client:
        leadership = await client.election(name).campaign(b"real", ttl=5)
        argv = ["put", "--fenced", "--leader-key", leadership.key.decode()]
        argv += ["--token", str(leadership.token), f"{name}/state", "v", *endpoints]
        status, out, err = await run_geeh(*argv)
        assert (status, out) == (2, "")
        assert err.count("\n") == 1 and f"{name}/state" in err and "blocks the election" in err
        assert await client.get(f"{name}/state") is None
        await leadership.resign()

        await client.put(f"{name}/state", b"stray")
        election = client.election(name)
        waiting = asyncio.ensure_future(election.campaign(b"behind", ttl=5))

        async def two() -> bool:
            return len(await election.candidates(ttl=False)) == 2

        await eventually(two, what="a candidate behind the stray key")
        status, out, err = await run_geeh("candidates", name, *endpoints)
        assert (status, err) == (0, "")
        stray, behind = out.splitlines()[1:]
        assert stray.split()[:2] == ["0", f"{name}/state"] and stray.endswith(f"({flag})")
        assert behind.split()[0] == "1" and flag not in behind
        status, out, err = await run_geeh("candidates", name, "--json", *endpoints)
        records = json.loads(out)["candidates"]
        assert [(r["lease"] == 0, r["note"]) for r in records] == [(True, flag), (False, None)]

        status, out, err = await run_geeh("leader", name, *endpoints)
        assert status == 0 and out.splitlines()[:2] == [f"{name}/state", "stray"]
        assert err == f"geeh leader: {name}/state has no lease: {flag}\n"
        await client.delete(f"{name}/state")
        await (await within(waiting, 5, "the candidate behind to win")).resign()

"""`geeh status`: members, health, raft leader and revision, on 1 and 3 members, one down."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator

import pytest
from conftest import ETCD_BINARIES
from support.wait import within

import geeh
from geeh.testing import LocalEtcdCluster, free_port


async def run_geeh(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "geeh.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(process.communicate(), 30, f"geeh {' '.join(args)}")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def rows(out: str) -> dict[str, list[str]]:
    """The member table by member name (cells split on 2+ spaces; "*" kept as a cell)."""
    table: dict[str, list[str]] = {}
    for line in out.splitlines()[2:]:
        if line.startswith("("):
            continue
        mark, rest = line[:1], line[3:]
        cells = re.split(r"\s{2,}", rest.strip())
        table[cells[0]] = [mark.strip(), *cells]
    return table


async def test_one_member(etcd: LocalEtcdCluster) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        revision = await client.put("status-test", "x")
        status, out, err = await run_geeh("status", "--endpoints", etcd.endpoints[0])
        await client.delete("status-test")
    assert (status, err) == (0, "")
    headline = out.splitlines()[0]
    assert headline.startswith("cluster ") and "raft leader m0" in headline
    assert int(headline.split("revision ")[1].split()[0]) >= revision
    (member,) = rows(out).values()
    mark, name, _id, endpoint, role, health, version, *_ = member
    assert (mark, name, endpoint, role, health) == (
        "*",
        "m0",
        etcd.endpoints[0],
        "leader",
        "healthy",
    )
    assert version.startswith("3.")

    status, out, err = await run_geeh("status", "--json", "--endpoints", etcd.endpoints[0])
    assert (status, err) == (0, "")
    record = json.loads(out)
    assert record["healthy"] is True and record["leader"] == "m0"
    assert record["using"] == etcd.endpoints[0] and record["revision"] >= revision
    (m,) = record["members"]
    assert (m["name"], m["role"], m["health"], m["using"]) == ("m0", "leader", "healthy", True)


async def test_unreachable_is_one_line() -> None:
    status, out, err = await run_geeh(
        "status", "--endpoints", f"127.0.0.1:{free_port()}", "--dial-timeout", "1"
    )
    assert status == 4 and out == ""
    assert err.count("\n") == 1 and "cannot reach etcd" in err


# -- three members, one down ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def three() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster(3, etcd_bin=ETCD_BINARIES["3.5"]) as cluster:
        yield cluster


async def test_three_members_one_killed_one_frozen(three: LocalEtcdCluster) -> None:
    everyone = ",".join(three.endpoints)
    status, out, err = await run_geeh("status", "--endpoints", everyone)
    assert (status, err) == (0, ""), out
    table = rows(out)
    assert sorted(table) == ["m0", "m1", "m2"]
    assert all(row[5] == "healthy" for row in table.values())
    assert sorted(row[4] for row in table.values()) == ["follower", "follower", "leader"]
    assert [row[0] for row in table.values()].count("*") == 1

    leader = await asyncio.to_thread(three.leader_index)
    assert leader is not None
    down = (leader + 1) % 3
    three.kill(down)
    try:
        # Asked through the killed member first: the client moves on, the table says so.
        endpoints = ",".join([three.endpoints[down], *three.endpoints])
        status, out, err = await run_geeh("status", "--endpoints", endpoints)
        assert (status, err) == (1, ""), out
        table = rows(out)
        assert table[f"m{down}"][4:6] == ["-", "down: connection refused"]
        assert table[f"m{down}"][0] == ""  # not the one used
        assert table[f"m{leader}"][4:6] == ["leader", "healthy"]
        assert f"raft leader m{leader}" in out.splitlines()[0]

        frozen = 3 - leader - down
        three.stop(frozen)  # SIGSTOP: connected, silent; and the quorum is gone
        status, out, err = await run_geeh(
            "status", "--json", "--timeout", "0.5", "--endpoints", three.endpoints[leader]
        )
        assert (status, err) == (1, ""), out
        members = {m["name"]: m for m in json.loads(out)["members"]}
        assert members[f"m{frozen}"]["health"] == "down: no answer within 0.5s"
        assert members[f"m{down}"]["health"] == "down: connection refused"
        assert members[f"m{leader}"]["healthy"] is True or members[f"m{leader}"]["health"] in (
            "no leader",
        )
    finally:
        if three.is_stopped(3 - leader - down):
            three.resume(3 - leader - down)
        await asyncio.to_thread(three.restart, down)
        await asyncio.to_thread(three.wait_healthy, 30, range(3))

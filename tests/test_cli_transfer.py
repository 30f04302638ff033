"""`geeh transfer NAME --to TARGET` as a subprocess against a real etcd (issue 19)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from support.kv import joined
from support.wait import within

import geeh
from geeh.testing import LocalEtcdCluster


async def geeh_transfer(etcd: LocalEtcdCluster, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEEH_", "ETCDCTL_"))}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "geeh.cli", "transfer", "--endpoints", etcd.endpoints[0]],
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_geeh_transfer_hands_over_past_the_next_in_line(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    election = client.election(name)
    old = await election.campaign(b"L", ttl=5)
    a = asyncio.ensure_future(election.campaign(b"A", ttl=5))
    await joined(client, name, 2)
    t = asyncio.ensure_future(election.campaign(b"T", ttl=5))
    await joined(client, name, 3)

    code, out, err = await geeh_transfer(etcd, name, "--to", "T", "--json")
    assert (code, err) == (0, "")
    new = await within(t, 5, "the target to lead")
    assert json.loads(out) == {
        "election": name,
        "from": old.key.decode(),
        "to": new.key.decode(),
        "token": new.token,
    }
    await within(old.lost.wait(), 5, "the old leader to see its end")
    assert isinstance(old.lost.reason, geeh.CandidateRemoved)
    assert not a.done()
    await new.resign()
    await (await within(a, 5, "A to lead")).resign()


async def test_geeh_transfer_to_nobody_is_one_line_and_status_1(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    old = await client.election(name).campaign(b"L", ttl=5)
    code, out, err = await geeh_transfer(etcd, name, "--to", "nobody")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "no waiting candidate has key or value nobody" in err
    assert old.is_leader
    code, out, err = await geeh_transfer(etcd, name + "-empty", "--to", "x")
    assert code == 1 and "has no leader" in err
    await old.resign()

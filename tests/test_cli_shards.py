"""`geeh shards NAME` as a subprocess against a real etcd (issue 19)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from support.wait import eventually

import geeh
from geeh.testing import LocalEtcdCluster

N = 6


async def geeh_shards(etcd: LocalEtcdCluster, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEEH_", "ETCDCTL_"))}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "geeh.cli", "shards", "--endpoints", etcd.endpoints[0]],
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_geeh_shards_shows_owners_tokens_and_balance(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    async def work(shard: int, leadership: geeh.Leadership) -> None:
        await asyncio.Event().wait()

    shards = client.shards(name, N)
    other = geeh.Client(etcd.endpoints)
    await other.connect()
    runs = [
        asyncio.ensure_future(shards.run(work, "w-a", ttl=2)),
        asyncio.ensure_future(other.shards(name, N).run(work, "w-b", ttl=2)),
    ]
    try:

        async def balanced() -> bool:
            view = await shards.view()
            return len(view.members) == 2 and view.balanced()

        await eventually(balanced, what="two balanced members")
        view = await shards.view()
        code, out, err = await geeh_shards(etcd, name, "--count", str(N), "--json")
        assert (code, err) == (0, "")
        doc = json.loads(out)
        assert doc["balanced"] is True and doc["count"] == N
        assert sorted((m["value"], m["shards"]) for m in doc["members"]) == [
            ("w-a", 3),
            ("w-b", 3),
        ]
        for entry in doc["shards"]:
            owner = view.owners[entry["shard"]]
            assert entry["owner"]["token"] == owner.token
            assert entry["owner"]["key"] == owner.key.decode()

        code, out, err = await geeh_shards(etcd, name)  # the count found from the keys
        assert (code, err) == (0, "")
        assert f"{name}: {N} shards, {N} led, 2 members, balanced" in out
        assert out.splitlines()[0].split() == ["SHARD", "OWNER", "TOKEN", "KEY"]
    finally:
        for run in runs:
            run.cancel()
        await asyncio.wait(runs)
        await other.close()


async def test_geeh_shards_watch_prints_each_change(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEEH_", "ETCDCTL_"))}
    argv = [sys.executable, "-m", "geeh.cli", "shards", "--endpoints", etcd.endpoints[0]]
    process = await asyncio.create_subprocess_exec(
        *argv,
        name,
        "--count",
        "2",
        "--json",
        "--watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    run: asyncio.Future[None] | None = None
    try:
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert first["balanced"] is False and first["members"] == []

        async def work(shard: int, leadership: geeh.Leadership) -> None:
            await asyncio.Event().wait()

        run = asyncio.ensure_future(client.shards(name, 2).run(work, "solo", ttl=2))
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert line, "geeh shards --watch exited"
            if json.loads(line)["balanced"]:
                break
        process.send_signal(2)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if run is not None:
            run.cancel()
            await asyncio.wait({run})

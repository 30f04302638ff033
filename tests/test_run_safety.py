"""`geeh run`: two CMDs are never alive at once, even when the leader's CMD ignores SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import test_cli
from support.kv import joined
from support.wait import eventually
from test_cli import GEEH, Spawn

import geeh
from geeh.testing import LocalEtcdCluster, TcpProxy

# CMD: ignores SIGTERM and writes "pid time" every 10 ms, on the machine-wide monotonic clock.
HEARTBEAT = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "a", buffering=1) as out:
    while True:
        out.write(f"{os.getpid()} {time.monotonic()}\\n")
        time.sleep(0.01)
"""


spawn = test_cli.spawn  # the fixture that starts (and finally kills) child processes


def lifetimes(path: Path) -> dict[str, tuple[float, float]]:
    """Each CMD's first and last heartbeat."""
    seen: dict[str, tuple[float, float]] = {}
    for line in path.read_text().splitlines():
        pid, at = line.split()
        first = seen.get(pid, (float(at), 0.0))[0]
        seen[pid] = (first, float(at))
    return seen


async def test_cmds_never_overlap_when_the_leader_is_blackholed(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn, tmp_path: Path
) -> None:
    beats = tmp_path / "beats"
    beats.touch()
    cmd = ["--ttl", "2", "--", sys.executable, "-c", HEARTBEAT, str(beats)]
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        first = await spawn(*GEEH, "run", "--endpoints", proxy.endpoint, name, *cmd)
        await eventually(lambda: len(lifetimes(beats)) == 1, what="the first CMD")
        second = await spawn(*GEEH, "run", "--endpoints", ",".join(etcd.endpoints), name, *cmd)
        async with geeh.Client(etcd.endpoints) as client:
            await joined(client, name, 2)
        proxy.blackhole()  # the leader's keepalives stop reaching etcd
        assert await first.wait("the cut-off leader to give up", timeout=15) == 3
        assert "at risk" in await first.stderr()
        await eventually(lambda: len(lifetimes(beats)) == 2, timeout=15, what="the second CMD")
        proxy.pass_through()
        lives = lifetimes(beats)
        (_, a_last), (b_first, _) = sorted(lives.values())
        assert a_last < b_first, "the old leader's CMD was alive when the new one started"
        # The second CMD ignores SIGTERM, and geeh passes signals to CMD: end CMD itself.
        newest = max(lives, key=lambda pid: lives[pid][0])
        os.kill(int(newest), signal.SIGKILL)
        assert await second.wait() == 128 + signal.SIGKILL


async def test_a_job_under_geeh_run_writes_fenced(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    geeh_put = " ".join([sys.executable, "-m", "geeh.cli", "put", "--fenced"])
    script = f'{geeh_put} {name}-data "$GEEH_FENCING_TOKEN"'
    run = await spawn(
        *GEEH, "run", "--endpoints", ",".join(etcd.endpoints), name, "--", "sh", "-c", script
    )
    assert await run.line("geeh put's answer") == b"OK\n"
    assert await run.wait() == 0
    async with geeh.Client(etcd.endpoints) as client:
        item = await client.get(f"{name}-data")
        assert item is not None and int(item.value) > 0
        # The same write, once that leadership is over, is refused and writes nothing.
        late = await spawn(
            *GEEH,
            "put",
            "--endpoints",
            ",".join(etcd.endpoints),
            "--fenced",
            "--leader-key",
            f"{name}/1",
            "--token",
            item.value.decode(),
            f"{name}-data",
            "late",
        )
        assert await late.wait() == 3
        assert "not leader" in await late.stderr()
        again = await client.get(f"{name}-data")
        assert again is not None and again.value == item.value


async def test_fenced_put_outside_geeh_run_is_a_usage_error(
    etcd: LocalEtcdCluster, spawn: Spawn
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEEH_")}
    put = await spawn(
        *GEEH, "put", "--endpoints", ",".join(etcd.endpoints), "--fenced", "k", "v", env=env
    )
    assert await put.wait() == 2
    err = await put.stderr()
    assert err.count("\n") == 1 and "--leader-key" in err

"""`geeh run`: nothing of CMD's process tree outlives geeh or its leadership.

geeh killed, hung up or frozen; CMD exiting while its children run on: in every case CMD's
whole tree (its group, and descendants that left it by double fork or setsid) is stopped,
and a second candidate's CMD starts only after the first tree is gone.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import psutil
import pytest
import test_cli
from support.kv import joined
from support.wait import eventually
from test_cli import GEEH, Spawn, eps, geeh_cmd
from test_run_safety import HEARTBEAT, lifetimes

import geeh
from geeh.testing import LocalEtcdCluster

spawn = test_cli.spawn  # the fixture that starts (and finally kills) child processes

# CMD: a child in its group, and a grandchild that left it (setsid) and was orphaned at once
# (double fork); prints the three pids, then waits.
TREE = """
import os, sys, time
child = os.fork()
if child == 0:
    time.sleep(1000)
    os._exit(0)
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(1000)
        os._exit(0)
    os.write(w, f"{grandchild}\\n".encode())
    os._exit(0)
grandchild = int(os.read(r, 64))
print(os.getpid(), child, grandchild, flush=True)
time.sleep(1000)
"""

# CMD and a child of its own write "pid time" every 10 ms (machine-wide monotonic clock).
# argv: the heartbeat file, then "exit" to have CMD exit once its child beats, leaving it
# running, and "deaf" to have the child ignore SIGTERM.
BEATING_TREE = """
import os, signal, sys, time
path, *how = sys.argv[1:]
child = os.fork()
if not child and "deaf" in how:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(path, "a", buffering=1) as out:
    while True:
        out.write(f"{os.getpid()} {time.monotonic()}\\n")
        if child and "exit" in how and f"{child} " in open(path).read():
            sys.exit(0)
        time.sleep(0.01)
"""


def gone(pid: int) -> bool:
    """No such process, or only its exit status left (a zombie)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: list[int]) -> bool:
    return all(gone(pid) for pid in pids)


async def no_keys(etcd: LocalEtcdCluster, name: str) -> bool:
    async with geeh.Client(etcd.endpoints) as client:
        return await client.election(name).leader() is None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGQUIT])
async def test_when_geeh_dies_cmds_whole_tree_dies_at_once(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn, sig: signal.Signals
) -> None:
    # A TTL far longer than the waits below: the tree must not last until the lease expires.
    run = await spawn(*geeh_cmd(etcd, "run", name, "--ttl", "60", "--", sys.executable, "-c", TREE))
    pids = [int(pid) for pid in (await run.line("CMD's pids")).split()]
    assert not any(gone(pid) for pid in pids)
    assert psutil.Process(pids[2]).ppid() != pids[0]  # the grandchild was orphaned
    run.process.send_signal(sig)
    await eventually(lambda: all_gone(pids), timeout=10, what="CMD's tree to die")
    if sig == signal.SIGKILL:
        assert await run.wait() == -signal.SIGKILL
        assert await run.rest() == b""  # the watchdog, the last holder of geeh's stdout, exited
    else:  # handled like SIGTERM: CMD got SIGTERM, died of it; geeh resigned, then exited
        assert await run.wait() == 128 + signal.SIGTERM
        assert await no_keys(etcd, name)


async def test_a_frozen_geeh_cannot_keep_its_tree_running_past_the_lease(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn, tmp_path: Path
) -> None:
    beats = tmp_path / "beats"
    beats.touch()
    cmd = [name, "--ttl", "2", "--", sys.executable, "-c", BEATING_TREE, str(beats)]
    first = await spawn(*geeh_cmd(etcd, "run", *cmd))
    await eventually(lambda: len(lifetimes(beats)) == 2, what="the first CMD and its child")
    first_tree = [int(pid) for pid in lifetimes(beats)]
    second = await spawn(*geeh_cmd(etcd, "run", *cmd))
    async with geeh.Client(etcd.endpoints) as client:
        await joined(client, name, 2)
    first.process.send_signal(signal.SIGSTOP)  # geeh frozen: it cannot stop CMD itself
    try:
        await eventually(lambda: len(lifetimes(beats)) == 4, timeout=15, what="the second CMD")
        assert all_gone(first_tree)
    finally:
        first.process.send_signal(signal.SIGCONT)
    lives = lifetimes(beats)
    last_of_first = max(lives[str(pid)][1] for pid in first_tree)
    first_of_second = min(first for pid, (first, _) in lives.items() if int(pid) not in first_tree)
    assert last_of_first < first_of_second, "the first tree was alive when the second started"
    assert await first.wait("the thawed geeh to see its loss", timeout=15) == 3
    second.process.send_signal(signal.SIGTERM)
    assert await second.wait() == 128 + signal.SIGTERM


async def test_children_left_by_an_exited_cmd_die_before_the_resign(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn, tmp_path: Path
) -> None:
    beats = tmp_path / "beats"
    beats.touch()
    ttl = ["--ttl", "30", "--grace", "0.5"]
    # CMD exits 0 at once; its child ignores SIGTERM and would run forever.
    first = await spawn(
        *geeh_cmd(etcd, "run", name, *ttl, "--", sys.executable, "-c", BEATING_TREE, str(beats),
                  "exit", "deaf")
    )  # fmt: skip
    await eventually(lambda: len(lifetimes(beats)) == 2, what="CMD and its child")
    first_tree = [int(pid) for pid in lifetimes(beats)]
    # The next leader's CMD beats too: it must not start while the first one's child lives.
    second = await spawn(
        *GEEH, "run", "--endpoints", eps(etcd), name, *ttl, "--",
        sys.executable, "-c", BEATING_TREE, str(beats),
    )  # fmt: skip
    assert await first.wait("exit after the leftover child is killed", timeout=15) == 0
    assert all_gone(first_tree)
    await eventually(lambda: len(lifetimes(beats)) == 4, timeout=15, what="the second CMD")
    lives = lifetimes(beats)
    last_of_first = max(lives[str(pid)][1] for pid in first_tree)
    first_of_second = min(first for pid, (first, _) in lives.items() if int(pid) not in first_tree)
    assert last_of_first < first_of_second, "a child of the old CMD ran beside the new leader"
    second.process.send_signal(signal.SIGTERM)
    assert await second.wait() == 128 + signal.SIGTERM


async def test_a_stop_signal_ends_a_deaf_tree_after_the_grace_then_resigns(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn, tmp_path: Path
) -> None:
    beats = tmp_path / "beats"
    beats.touch()
    run = await spawn(
        *geeh_cmd(etcd, "run", name, "--ttl", "30", "--grace", "0.5", "--",
                  sys.executable, "-c", HEARTBEAT, str(beats))
    )  # fmt: skip
    await eventually(lambda: len(lifetimes(beats)) == 1, what="CMD")
    run.process.send_signal(signal.SIGTERM)  # CMD ignores it: SIGKILL after the grace
    assert await run.wait("exit after CMD's SIGKILL", timeout=15) == 128 + signal.SIGKILL
    assert all_gone([int(pid) for pid in lifetimes(beats)])
    assert await no_keys(etcd, name)

"""CMD's process tree under the watchdog, without etcd: each way the tree is stopped.

A tree: CMD, which notes SIGTERM in a file and goes on, and a grandchild that left CMD's
group (setsid) and lost its parent (double fork), which does the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.wait import eventually, within

from geeh.cli.proctree import CommandTree
from geeh.session import now

TREE = """
import os, signal, sys, time
notes = sys.argv[1]
def note(signum, frame):
    with open(notes, "a") as out:
        out.write(f"TERM {os.getpid()}\\n")
signal.signal(signal.SIGTERM, note)
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, f"{os.getpid()}\\n".encode())
        while True:
            time.sleep(0.05)
    os._exit(0)
grandchild = int(os.read(r, 64))
with open(sys.argv[2], "w") as out:
    out.write(f"{os.getpid()} {grandchild}\\n")
while True:
    time.sleep(0.05)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(autouse=True)
def _kill_leftovers() -> Iterator[None]:
    """Whatever a failed test left running is killed (CMD's pids, as the tree wrote them)."""
    yield
    for process in STARTED:  # psutil checks the start time: a reused pid is left alone
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running():
                process.kill()
    STARTED.clear()


STARTED: list[psutil.Process] = []


async def start(tmp_path: Path, grace: float = 0.2) -> tuple[CommandTree, list[int], Path]:
    notes, pids_file = tmp_path / "notes", tmp_path / "pids"
    command = [sys.executable, "-c", TREE, str(notes), str(pids_file)]
    tree = await CommandTree.start(command, dict(os.environ), grace)
    written = lambda: pids_file.exists() and pids_file.read_text().endswith("\n")  # noqa: E731
    await eventually(written, what="CMD's pids")
    pids = [int(pid) for pid in pids_file.read_text().split()]
    STARTED.extend(psutil.Process(pid) for pid in pids)
    assert tree.pid == pids[0] and not any(gone(pid) for pid in pids)
    # The orphaned grandchild came to the watchdog, CMD's parent: the tree's subreaper.
    assert psutil.Process(pids[1]).ppid() == psutil.Process(pids[0]).ppid()
    return tree, pids, notes


async def test_stop_sends_sigterm_to_the_whole_tree_then_sigkill(tmp_path: Path) -> None:
    tree, pids, notes = await start(tmp_path)
    tree.stop(0.3)
    assert await within(tree.wait(), 10, "the tree to be stopped") == 128 + signal.SIGKILL
    assert all(gone(pid) for pid in pids)
    # Both ignored SIGTERM, so each got it, and then SIGKILL.
    assert sorted(int(line.split()[1]) for line in notes.read_text().splitlines()) == sorted(pids)
    tree.close()


async def test_the_tree_ends_by_the_deadline_with_no_word_from_geeh(tmp_path: Path) -> None:
    tree, pids, notes = await start(tmp_path)
    tree.set_deadline(now() + 0.5)  # then nothing: geeh frozen
    await eventually(lambda: all(gone(pid) for pid in pids), what="the tree to end")
    assert await within(tree.wait(), 10, "the watchdog") == 128 + signal.SIGKILL
    assert notes.exists()  # SIGTERM came first, at the deadline less the grace
    tree.close()


async def test_the_tree_ends_when_geehs_pipe_closes(tmp_path: Path) -> None:
    tree, pids, _ = await start(tmp_path)
    tree.close()  # what geeh's death does to the pipe
    await eventually(lambda: all(gone(pid) for pid in pids), what="the tree to end")
    assert await within(tree.wait(), 10, "the watchdog") == 128 + signal.SIGKILL


async def test_a_command_that_cannot_start_is_an_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        await CommandTree.start(["/nonexistent/command"], dict(os.environ), 0.2)

"""The examples in examples/, run as their README shows, against a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.kv import joined
from support.wait import eventually

import geeh
from geeh.testing import LocalEtcdCluster, free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
START = 15.0  # a Python process with grpc takes ~0.5 s to start; the machine may be busy
QUICK = 5.0


class Example:
    """An example script running in a child process; stdout read line by line, bounded."""

    def __init__(self, process: asyncio.subprocess.Process, script: str) -> None:
        self.process = process
        self.script = script

    async def line(self, what: str, timeout: float = START) -> str:
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.script}: no line after {timeout}s waiting for {what}")
        if not raw:
            pytest.fail(f"{self.script} exited before {what}: {await self.stderr()!r}")
        return raw.decode().rstrip("\n")

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await asyncio.wait_for(self.process.stderr.read(), QUICK)).decode()

    async def wait(self, timeout: float = QUICK) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.script} did not exit within {timeout}s")

    async def interrupt(self, sig: int = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return await self.wait()


Run = Callable[..., Coroutine[Any, Any, Example]]


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    """Start example scripts; any still running at the end of the test is killed."""
    started: list[Example] = []

    async def start(script: str, *args: str, env: dict[str, str] | None = None) -> Example:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / script),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        started.append(Example(process, script))
        return started[-1]

    yield start
    for example in started:
        if example.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                example.process.kill()
            await example.process.wait()


def leader_line(name: str, value: str) -> re.Pattern[str]:
    return re.compile(rf"current leader is {re.escape(name)}/[0-9a-f]+, with value={value}")


async def test_join_and_observe_an_election(etcd: LocalEtcdCluster, name: str, run: Run) -> None:
    endpoints = ",".join(etcd.endpoints)
    observer = await run("observe_election.py", "--endpoints", endpoints, name)
    assert await observer.line("initial state") == "no current leader"

    alice = await run("join_election.py", "--endpoints", endpoints, name, "alice")
    elected = await alice.line("alice elected")
    assert re.fullmatch(rf"elected: {re.escape(name)}/[0-9a-f]+, with value=alice", elected)
    assert leader_line(name, "alice").fullmatch(await observer.line("alice leads"))

    bob = await run("join_election.py", "--endpoints", endpoints, name, "bob")
    async with geeh.Client(etcd.endpoints) as client:
        await joined(client, name, 2)
        # Ctrl-C makes alice resign: bob takes over.
        assert await alice.interrupt() == 0
        assert (await bob.line("bob elected")).endswith("with value=bob")
        assert leader_line(name, "bob").fullmatch(await observer.line("bob leads"))
        assert await bob.interrupt(signal.SIGTERM) == 0
        assert await observer.line("nobody leads") == "no current leader"
        assert await client.election(name).leader() is None
    assert await observer.interrupt() == 0
    for example in (alice, bob, observer):
        assert await example.stderr() == ""


async def test_join_interrupted_while_waiting_leaves_the_queue(
    etcd: LocalEtcdCluster, name: str, run: Run
) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        leadership = await client.election(name).campaign("holder", ttl=5)
        waiting = await run("join_election.py", "--endpoints", ",".join(etcd.endpoints), name, "w")
        await joined(client, name, 2)
        assert await waiting.interrupt() == 0
        assert await waiting.stderr() == ""
        async with client.election(name).observe() as changes:
            current = await asyncio.wait_for(anext(changes), QUICK)
            assert current is not None and current.key == leadership.key
            await leadership.resign()
            # The waiting candidate's key went with it: nobody is left to take over.
            assert await asyncio.wait_for(anext(changes), QUICK) is None


async def test_endpoints_default_to_the_environment(
    etcd: LocalEtcdCluster, name: str, run: Run
) -> None:
    env = dict(os.environ, GEEH_ENDPOINTS=",".join(etcd.endpoints))
    observer = await run("observe_election.py", name, env=env)
    assert await observer.line("initial state") == "no current leader"
    assert await observer.interrupt() == 0


@pytest.mark.parametrize("script", ["join_election.py", "observe_election.py"])
async def test_unreachable_etcd_is_one_line_and_exit_1(script: str, run: Run) -> None:
    args = ["x", "v"] if script.startswith("join") else ["x"]
    started = time.monotonic()
    example = await run(script, "--endpoints", f"127.0.0.1:{free_port()}", *args)
    assert await example.wait(timeout=20) == 1
    err = await example.stderr()
    assert err.count("\n") == 1 and "cannot reach etcd" in err
    assert time.monotonic() - started < 5 + 5  # the default dial timeout, plus start-up


async def test_sqlite_refuses_a_deposed_leaders_late_write(
    etcd: LocalEtcdCluster, name: str, run: Run, tmp_path: Path
) -> None:
    db = str(tmp_path / "register.db")
    endpoints = ",".join(etcd.endpoints)
    paused = await run(
        "fenced_sqlite.py", "--endpoints", endpoints, "--pause-before-write", db, name, "a"
    )

    def stopped() -> bool:
        return psutil.Process(paused.process.pid).status() == psutil.STATUS_STOPPED

    await eventually(stopped, timeout=START, what="a to lead and pause before its write")
    # a is frozen past its TTL: its lease expires on etcd and b takes over.
    b = await run("fenced_sqlite.py", "--endpoints", endpoints, db, name, "b")
    b_token = int((await b.line("b's write")).removeprefix("wrote "))
    assert await b.wait() == 0
    paused.process.send_signal(signal.SIGCONT)
    late = await paused.line("a's late write")
    assert late.startswith("rejected ") and int(late.split()[1]) < b_token
    assert await paused.wait() == 0
    row = sqlite3.connect(db).execute("SELECT value, token FROM register").fetchone()
    assert row == ("b:1", b_token)


def user_pytest(
    tmp_path: Path, test_file: Path, *settings: str
) -> subprocess.CompletedProcess[str]:
    """pytest as a user runs it: no project config, the plugin loaded from its entry point,
    warnings are errors."""
    ini = tmp_path / "pytest.ini"
    ini.write_text("\n".join(["[pytest]", "filterwarnings = error", *settings]) + "\n")
    args = ["-c", str(ini), f"--rootdir={tmp_path}", "-p", "no:cacheprovider", "-q"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(test_file)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        check=False,
    )


def test_my_service_example_passes_with_the_plugin_alone(tmp_path: Path) -> None:
    out = user_pytest(
        tmp_path, EXAMPLES / "test_my_service.py", "asyncio_default_fixture_loop_scope = function"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```(?:python|\{code-block\} python)\n(.*?)^```", markdown, re.M | re.S)


def test_the_testing_howto_runs_as_written(tmp_path: Path) -> None:
    """docs/howto/testing.md: its Python blocks, together, are a test module that passes."""
    page = (EXAMPLES.parent / "docs" / "howto" / "testing.md").read_text()
    module = "\n\n".join(python_blocks(page))
    tests = re.findall(r"^(?:async )?def (test_\w+)", module, re.M)
    assert len(tests) >= 7, tests
    (tmp_path / "test_howto_testing.py").write_text(module)
    # The page's own pytest settings, as a user would copy them: a deprecation warning they
    # cause fails the run (warnings are errors).
    [config] = re.findall(
        r"^```toml\n\[tool\.pytest\.ini_options\]\n(asyncio.*?)^```", page, re.M | re.S
    )
    settings = [line.split("#")[0].replace('"', "").strip() for line in config.splitlines()]
    out = user_pytest(tmp_path, tmp_path / "test_howto_testing.py", *settings)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(tests)} passed" in out.stdout, out.stdout

"""The `geeh` command, driven as a subprocess against a real etcd, next to the real etcdctl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.kv import joined

import geeh
from geeh.cli import main
from geeh.testing import LocalEtcdCluster, free_port

GEEH = [sys.executable, "-m", "geeh.cli"]
# Generous bounds: the machine may be busy, and a Python process takes ~0.5 s to start.
START = 15.0
QUICK = 5.0


class Proc:
    """A child process whose stdout lines are read with bounded waits, as bytes."""

    def __init__(self, argv: Sequence[str], process: asyncio.subprocess.Process) -> None:
        self.argv = list(argv)
        command = self.argv[2:5] if self.argv[1:2] == ["-m"] else self.argv[:1] + self.argv[2:4]
        self.label = " ".join(os.path.basename(a) for a in command)
        self.process = process
        self.output = b""  # everything read from stdout so far

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self, what: str, timeout: float = START) -> bytes:
        """The next stdout line, newline included; fails the test on timeout or EOF."""
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.label}: no line after {timeout}s waiting for {what}")
        if not line:
            err = await self.stderr()
            pytest.fail(f"{self.label} exited before {what}: {err!r}")
        self.output += line
        return line

    async def lines(self, count: int, what: str, timeout: float = START) -> bytes:
        return b"".join([await self.line(what, timeout) for _ in range(count)])

    async def wait(self, what: str = "exit", timeout: float = QUICK) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.label} did not {what} within {timeout}s")

    async def rest(self) -> bytes:
        """The rest of stdout, up to EOF (bounded)."""
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), QUICK)
        self.output += rest
        return rest

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        with contextlib.suppress(TimeoutError):
            return (await asyncio.wait_for(self.process.stderr.read(), QUICK)).decode()
        return "<stderr not closed>"

    async def interrupt(self, sig: int = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return await self.wait(f"exit after {signal.Signals(sig).name}")


Spawn = Callable[..., Coroutine[Any, Any, Proc]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start child processes; any still running at the end of the test is killed."""
    started: list[Proc] = []

    async def start(*argv: str, env: dict[str, str] | None = None) -> Proc:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env if env is not None else clean_env(),
        )
        proc = Proc(argv, process)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.returncode is None:
            await stop(proc.process)


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (geeh cleans up), SIGKILL if that takes too long; then whatever it started."""
    family: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        family = psutil.Process(process.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without endpoint variables that could point the commands elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEEH_ENDPOINTS", "ETCDCTL_ENDPOINTS")}
    env["ETCDCTL_API"] = "3"
    env.update(extra)
    return env


def eps(etcd: LocalEtcdCluster) -> str:
    return ",".join(etcd.endpoints)


def geeh_cmd(etcd: LocalEtcdCluster, command: str, *args: str) -> list[str]:
    return [*GEEH, command, "--endpoints", eps(etcd), *args]


def etcdctl_cmd(etcdctl_path: str, etcd: LocalEtcdCluster, *args: str) -> list[str]:
    return [etcdctl_path, f"--endpoints={eps(etcd)}", *args]


async def etcdctl(etcdctl_path: str, etcd: LocalEtcdCluster, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *etcdctl_cmd(etcdctl_path, etcd, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), QUICK)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def keys_under(etcdctl_path: str, etcd: LocalEtcdCluster, name: str) -> list[str]:
    out = await etcdctl(etcdctl_path, etcd, "get", "--prefix", "--keys-only", f"{name}/")
    return [line for line in out.splitlines() if line]


async def leases(etcdctl_path: str, etcd: LocalEtcdCluster) -> set[str]:
    out = await etcdctl(etcdctl_path, etcd, "lease", "list")
    return {line.strip() for line in out.splitlines()[1:] if line.strip()}


def lease_of(key: bytes) -> str:
    """The hex lease ID at the end of a candidate key line."""
    return key.strip().rsplit(b"/", 1)[1].decode()


def key_line(name: str) -> re.Pattern[bytes]:
    """A candidate key line as etcdctl prints it: NAME/<lease in lowercase hex>."""
    return re.compile(re.escape(name.encode()) + rb"/[0-9a-f]+\n")


async def assert_clean(etcdctl_path: str, etcd: LocalEtcdCluster, name: str, lease: str) -> None:
    """No key of ours under NAME/, and our lease revoked (not merely left to expire)."""
    assert await keys_under(etcdctl_path, etcd, name) == []
    assert lease not in await leases(etcdctl_path, etcd)


# -- help and usage --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["", "demo", "elect", "observe", "leader", "run", "etcd"])
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"] if command else ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: geeh")
    assert "exit status:" in out
    if command not in ("demo", "etcd"):  # the commands that talk to an etcd of the user's
        assert "GEEH_ENDPOINTS" in out and "--endpoints" in out


def test_run_help_names_the_value_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`geeh run` takes its value as --value V: no VALUE argument it does not have."""
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "campaign with --value V" in out and "VALUE" not in out


async def test_help_through_python_m_and_the_installed_script(spawn: Spawn) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "geeh")
    for argv in ([*GEEH, "--help"], [script, "run", "--help"]):
        proc = await spawn(*argv)
        assert await proc.wait() == 0
        assert b"exit status:" in await proc.rest()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["elect"]) == 2
    assert main(["elect", "name"]) == 2  # VALUE missing
    assert main(["run", "name"]) == 2  # CMD missing
    assert main(["leader", "x", "--dial-timeout", "-1"]) == 2
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


# -- elect: etcdctl's output, and hand-over both ways ----------------------------------------


async def test_geeh_elect_hands_over_to_etcdctl_elect(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    ours = await spawn(*geeh_cmd(etcd, "elect", name, "geeh-value"))
    printed = await ours.lines(2, "geeh elected")
    key, value = printed.splitlines(keepends=True)
    assert key_line(name).fullmatch(key) and value == b"geeh-value\n"

    go = await spawn(*etcdctl_cmd(etcdctl_path, etcd, "elect", name, "go-value"))
    async with geeh.Client(etcd.endpoints) as client:  # wait until etcdctl is in the queue
        await joined(client, name, 2)
    assert go.output == b""
    assert await ours.interrupt() == 0
    go_printed = await go.lines(2, "etcdctl elected after geeh resigned")
    go_key, go_value = go_printed.splitlines(keepends=True)
    # The same two lines, byte for byte, from both tools.
    assert key_line(name).fullmatch(go_key) and go_value == b"go-value\n"
    assert await go.interrupt() == 0
    assert lease_of(key) not in await leases(etcdctl_path, etcd)


async def test_etcdctl_elect_hands_over_to_geeh_elect(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    go = await spawn(*etcdctl_cmd(etcdctl_path, etcd, "elect", name, "go-value"))
    go_key = await go.line("etcdctl elected")
    assert await go.line("etcdctl value") == b"go-value\n"

    ours = await spawn(*geeh_cmd(etcd, "elect", name, "geeh-value", "--ttl", "5"))
    async with geeh.Client(etcd.endpoints) as client:  # wait until geeh is in the queue
        await joined(client, name, 2)
    assert ours.output == b""
    assert await go.interrupt() == 0  # etcdctl resigns on SIGINT (its TTL is 60 s)
    key = await ours.line("geeh elected after etcdctl resigned")
    assert key_line(name).fullmatch(key) and key != go_key
    assert await ours.line("geeh value") == b"geeh-value\n"
    assert await ours.interrupt() == 0
    await assert_clean(etcdctl_path, etcd, name, lease_of(key))


# -- listening: etcdctl elect -l and geeh elect --listen report each other's leaders ---------


async def test_listeners_report_the_same_leaders_byte_for_byte(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    start = spawn
    go_listener = await start(*etcdctl_cmd(etcdctl_path, etcd, "elect", "-l", name))
    listener = await start(*geeh_cmd(etcd, "elect", "--listen", name))
    observer = await start(*geeh_cmd(etcd, "observe", name))
    listeners = (go_listener, listener, observer)

    # Leaders alternate between the two tools: geeh, etcdctl, geeh.
    first = await start(*geeh_cmd(etcd, "elect", name, "first-geeh"))
    first_lines = await first.lines(2, "first elected")
    for each in listeners:
        assert await each.lines(2, "first leader") == first_lines

    second = await start(*etcdctl_cmd(etcdctl_path, etcd, "elect", name, "second-go"))
    third = await start(*geeh_cmd(etcd, "elect", name, "third-geeh"))
    async with geeh.Client(etcd.endpoints) as client:
        await joined(client, name, 3)
    assert await first.interrupt() == 0
    second_lines = await second.lines(2, "etcdctl elected")
    for each in listeners:
        assert await each.lines(2, "second leader") == second_lines
    assert await second.interrupt() == 0
    third_lines = await third.lines(2, "third elected")
    for each in listeners:
        assert await each.lines(2, "third leader") == third_lines
    assert await third.interrupt() == 0

    assert go_listener.output == listener.output == observer.output
    assert go_listener.output == first_lines + second_lines + third_lines
    for each in (listener, observer):
        assert await each.interrupt() == 0
        assert await each.stderr() == ""
    assert await go_listener.interrupt() == 0


async def test_observe_json_reports_every_change_including_no_leader(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    observer = await spawn(*geeh_cmd(etcd, "observe", "--json", name))
    none = json.loads(await observer.line("initial state"))
    assert none["key"] is None and none["value"] is None and none["token"] is None
    async with geeh.Client(etcd.endpoints) as client:
        leadership = await client.election(name).campaign("v1", ttl=5)
        seen = json.loads(await observer.line("leader"))
        assert seen["key"] == leadership.key.decode() and seen["value"] == "v1"
        assert seen["token"] == leadership.token and seen["lease"] == leadership.lease
        await leadership.proclaim("v2")
        assert json.loads(await observer.line("new value"))["value"] == "v2"
        await leadership.resign()
        gone = json.loads(await observer.line("no leader again"))
        assert gone["key"] is None and gone["time"] > seen["time"]
    assert await observer.interrupt(signal.SIGTERM) == 0


# -- leader ----------------------------------------------------------------------------------


async def test_leader_prints_key_value_token_and_exits_1_without_leader(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    none = await spawn(*geeh_cmd(etcd, "leader", name))
    assert await none.wait() == 1
    assert await none.rest() == b""
    assert (await none.stderr()).count("\n") == 1

    async with geeh.Client(etcd.endpoints) as client:
        leadership = await client.election(name).campaign("the value", ttl=5)
        found = await spawn(*geeh_cmd(etcd, "leader", name))
        assert await found.wait() == 0
        expected = b"%s\nthe value\n%d\n" % (leadership.key, leadership.token)
        assert await found.rest() == expected
        as_json = await spawn(*geeh_cmd(etcd, "leader", "--json", name))
        assert await as_json.wait() == 0
        record = json.loads(await as_json.rest())
        assert record["token"] == leadership.token and record["value"] == "the value"
        await leadership.resign()


# -- endpoints and unreachable etcd ----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["leader", "x"], ["elect", "x", "v"], ["observe", "x"], ["run", "x", "--", "true"]],
    ids=["leader", "elect", "observe", "run"],
)
async def test_unreachable_etcd_one_line_and_exit_4_within_dial_timeout(
    argv: list[str], spawn: Spawn
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = await spawn(*GEEH, argv[0], "--endpoints", dead, "--dial-timeout", "1", *argv[1:])
    assert await proc.wait(timeout=10) == 4
    elapsed = time.monotonic() - started
    err = await proc.stderr()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert dead in err and err.startswith(f"geeh {argv[0]}: ")
    assert elapsed < 1 + 4  # the dial timeout, plus the interpreter's start-up


async def test_endpoints_from_environment_and_flag(
    etcd: LocalEtcdCluster, name: str, spawn: Spawn
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cases = [
        ([], clean_env(GEEH_ENDPOINTS=eps(etcd)), 1),
        ([], clean_env(ETCDCTL_ENDPOINTS=eps(etcd)), 1),
        ([], clean_env(GEEH_ENDPOINTS=eps(etcd), ETCDCTL_ENDPOINTS=dead), 1),
        (["--endpoints", eps(etcd)], clean_env(GEEH_ENDPOINTS=dead), 1),
        ([], clean_env(GEEH_ENDPOINTS=dead, ETCDCTL_ENDPOINTS=eps(etcd)), 4),
    ]
    for flags, env, status in cases:
        proc = await spawn(*GEEH, "leader", name, "--dial-timeout", "1", *flags, env=env)
        assert await proc.wait(timeout=10) == status, (flags, await proc.stderr())


# -- elect: clean-up and loss ----------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_elect_signal_resigns_and_leaves_nothing_behind(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn, sig: int
) -> None:
    leader = await spawn(*geeh_cmd(etcd, "elect", name, "leader"))
    key = await leader.line("elected")
    waiting = await spawn(*geeh_cmd(etcd, "elect", name, "waiting"))
    async with geeh.Client(etcd.endpoints) as client:
        await joined(client, name, 2)
        waiting_key = (await keys_under(etcdctl_path, etcd, name))[1]
        # Interrupting a candidate that is still waiting withdraws it.
        assert await waiting.interrupt(sig) == 0
        assert waiting.output == b""
        assert await leader.interrupt(sig) == 0
        assert await client.election(name).leader() is None
    assert await leader.stderr() == "" and await waiting.stderr() == ""
    await assert_clean(etcdctl_path, etcd, name, lease_of(key))
    assert lease_of(waiting_key.encode()) not in await leases(etcdctl_path, etcd)
    assert not psutil.pid_exists(leader.pid)


async def test_elect_exits_3_with_one_line_when_its_lease_is_revoked(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    leader = await spawn(*geeh_cmd(etcd, "elect", name, "doomed", "--ttl", "30"))
    key = await leader.line("elected")
    await leader.line("value")
    await etcdctl(etcdctl_path, etcd, "lease", "revoke", lease_of(key))
    assert await leader.wait("exit after losing its lease") == 3
    err = await leader.stderr()
    assert err.count("\n") == 1 and "lost leadership" in err and "Traceback" not in err


async def test_elect_exits_3_when_its_lease_is_revoked_while_waiting(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        leadership = await client.election(name).campaign("holder", ttl=5)
        waiting = await spawn(*geeh_cmd(etcd, "elect", name, "waiting", "--ttl", "30"))
        await joined(client, name, 2)
        waiting_key = (await keys_under(etcdctl_path, etcd, name))[1]
        await etcdctl(etcdctl_path, etcd, "lease", "revoke", lease_of(waiting_key.encode()))
        assert await waiting.wait("exit after losing its candidacy") == 3
        err = await waiting.stderr()
        assert err.count("\n") == 1 and f"campaign in {name} ended" in err
        assert await waiting.rest() == b""
        await leadership.resign()


# -- run -------------------------------------------------------------------------------------


async def test_run_passes_the_leadership_to_cmd_and_exits_with_its_status(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    script = 'echo "$GEEH_ELECTION $GEEH_LEADER_KEY $GEEH_FENCING_TOKEN $GEEH_LEASE"; exit 7'
    run = await spawn(*geeh_cmd(etcd, "run", name, "--value", "v", "--", "sh", "-c", script))
    election, key, token, lease = (await run.line("CMD's output")).decode().split()
    assert election == name and key == f"{name}/{lease}" and int(token) > 0
    assert await run.wait() == 7
    await assert_clean(etcdctl_path, etcd, name, lease)


async def test_run_cmd_not_found_exits_127_and_resigns(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    run = await spawn(*geeh_cmd(etcd, "run", name, "--", "/nonexistent/command"))
    assert await run.wait() == 127
    assert "cannot run /nonexistent/command" in await run.stderr()
    assert await keys_under(etcdctl_path, etcd, name) == []


# CMD traps the signal, prints its pid and lease, then runs until the signal comes; `sleep`
# keeps it from spinning. Its stderr is silenced: sh reports its `sleep` being signalled there.
CHILD = (
    'exec 2>/dev/null; trap "echo got-{sig}; exit 0" {sig}; echo "$$ $GEEH_LEASE"; '
    "while :; do sleep 0.1; done"
)


async def test_run_stops_cmd_when_the_lease_is_revoked_from_outside(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    script = CHILD.format(sig="TERM")
    run = await spawn(*geeh_cmd(etcd, "run", name, "--ttl", "30", "--", "sh", "-c", script))
    pid, lease = (await run.line("CMD started")).decode().split()
    assert psutil.pid_exists(int(pid))
    await etcdctl(etcdctl_path, etcd, "lease", "revoke", lease)
    assert await run.line("CMD got SIGTERM") == b"got-TERM\n"
    assert await run.wait("exit after the lease was revoked") == 3
    err = await run.stderr()
    assert err.count("\n") == 1 and "lost leadership" in err
    assert not psutil.pid_exists(int(pid))


async def test_run_kills_cmd_that_ignores_sigterm_after_the_grace_period(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    script = "echo \"$$ $GEEH_LEASE\"; trap '' TERM; while :; do sleep 0.1; done"
    run = await spawn(
        *geeh_cmd(etcd, "run", name, "--ttl", "30", "--grace", "0.5", "--", "sh", "-c", script)
    )
    pid, lease = (await run.line("CMD started")).decode().split()
    started = time.monotonic()
    await etcdctl(etcdctl_path, etcd, "lease", "revoke", lease)
    assert await run.wait("exit after SIGKILL to CMD") == 3
    assert time.monotonic() - started >= 0.5
    assert not psutil.pid_exists(int(pid))


async def test_run_sigint_reaches_cmd_first_then_resigns(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    script = CHILD.format(sig="INT")
    run = await spawn(*geeh_cmd(etcd, "run", name, "--", "sh", "-c", script))
    pid, lease = (await run.line("CMD started")).decode().split()
    run.process.send_signal(signal.SIGINT)
    assert await run.line("CMD got SIGINT") == b"got-INT\n"
    assert await run.wait("exit after CMD") == 0  # CMD's status
    assert not psutil.pid_exists(int(pid))
    await assert_clean(etcdctl_path, etcd, name, lease)


async def test_run_interrupted_before_elected_never_starts_cmd(
    etcd: LocalEtcdCluster, name: str, etcdctl_path: str, spawn: Spawn
) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        leadership = await client.election(name).campaign("holder", ttl=5)
        run = await spawn(*geeh_cmd(etcd, "run", name, "--", "echo", "must not run"))
        await joined(client, name, 2)
        assert await run.interrupt() == 128 + signal.SIGINT
        assert await run.rest() == b""
        assert await keys_under(etcdctl_path, etcd, name) == [leadership.key.decode()]
        await leadership.resign()


# -- etcd ------------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [1, 3])
async def test_etcd_serves_until_sigint_then_cleans_up(
    members: int, etcdctl_path: str, spawn: Spawn
) -> None:
    served = await spawn(*GEEH, "etcd", "--members", str(members))
    endpoints = (await served.line("endpoints", timeout=30)).decode().strip().split(",")
    assert len(endpoints) == members
    children = psutil.Process(served.pid).children(recursive=True)
    members_pids = [p.pid for p in children if "--initial-cluster-token" in " ".join(p.cmdline())]
    assert len(members_pids) == members
    async with geeh.Client(endpoints) as client:
        assert await client.election("x").leader() is None
    assert await served.interrupt() == 0
    err = await served.stderr()
    data_dir = re.search(r"data in (\S+);", err)
    assert data_dir is not None, err
    assert not await asyncio.to_thread(os.path.exists, data_dir.group(1))
    assert not any(psutil.pid_exists(pid) for pid in members_pids)


async def test_etcd_keeps_data_dir_when_given(tmp_path: os.PathLike[str], spawn: Spawn) -> None:
    served = await spawn(*GEEH, "etcd", "--data-dir", str(tmp_path))
    await served.line("endpoints", timeout=30)
    assert await served.interrupt(signal.SIGTERM) == 0
    assert await asyncio.to_thread(os.path.isdir, os.path.join(tmp_path, "m0.etcd"))


async def test_etcd_tls_prints_what_to_export(spawn: Spawn, etcdctl_path: str) -> None:
    """`geeh etcd --tls`: https endpoints, then one line to paste, with the endpoints and the
    certificates for geeh and for etcdctl, as the README shows it; both tools connect."""
    served = await spawn(*GEEH, "etcd", "--tls")
    urls = (await served.line("endpoints", timeout=30)).decode().strip()
    assert urls.startswith("https://127.0.0.1:")
    exports = shlex.split((await served.line("export line", timeout=5)).decode())
    assert exports[0] == "export"
    env = dict(item.split("=", 1) for item in exports[1:])
    names = ["ENDPOINTS", "CACERT", "CERT", "KEY"]
    assert list(env) == [f"{tool}_{n}" for tool in ("GEEH", "ETCDCTL") for n in names]
    assert env["GEEH_ENDPOINTS"] == env["ETCDCTL_ENDPOINTS"] == urls
    assert all(env[f"GEEH_{n}"] == env[f"ETCDCTL_{n}"] for n in names)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    [shown] = [line for line in readme.splitlines() if line.startswith("export GEEH_ENDPOINTS=h")]
    assert [item.split("=")[0] for item in shown.split()] == [e.split("=")[0] for e in exports]

    leader = await spawn(*GEEH, "leader", "x", env=clean_env(**env))
    assert await leader.wait() == 1, await leader.stderr()  # connected: no leader
    put = await spawn(etcdctl_path, "put", "x-from-etcdctl", "v", env=clean_env(**env))
    assert await put.wait() == 0, await put.stderr()
    tls = geeh.TLS(ca=env["GEEH_CACERT"], cert=env["GEEH_CERT"], key=env["GEEH_KEY"])
    async with geeh.Client(urls, tls=tls) as client:
        assert await client.election("x").leader() is None
        assert await client.get("x-from-etcdctl") is not None
    assert await served.interrupt() == 0


# -- demo ------------------------------------------------------------------------------------


async def test_demo_runs_to_completion_and_cleans_up(spawn: Spawn) -> None:
    demo = await spawn(*GEEH, "demo")
    assert await demo.wait("finish", timeout=90) == 0, await demo.stderr()
    out = (await demo.rest()).decode()
    assert "Traceback" not in out and await demo.stderr() == ""
    summary = out[out.index("== summary") :]
    assert re.search(r"graceful resign \(SIGTERM\)\s+[\d.]+ ms", summary), summary
    assert re.search(r"crashed leader \(SIGKILL\)\s+[\d.]+ (ms|s)", summary), summary
    assert re.search(r"crashed etcd member \(SIGKILL\)\s+no change", summary), summary
    for pid in map(int, re.findall(r"started \(pid (\d+)\)", out)):
        assert not psutil.pid_exists(pid)


async def test_demo_ctrl_c_cleans_up(spawn: Spawn) -> None:
    demo = await spawn(*GEEH, "demo")
    while b"SIGKILL -> candidate" not in await demo.line("step 2", timeout=60):
        pass
    children = psutil.Process(demo.pid).children(recursive=True)
    assert await demo.interrupt() == 128 + signal.SIGINT
    await demo.rest()
    out = demo.output.decode()
    assert "interrupted" in out and "stopping etcd" in out
    pids = [p.pid for p in children] + list(map(int, re.findall(r"\(pid (\d+)\)", out)))
    assert pids and not any(psutil.pid_exists(pid) for pid in pids)

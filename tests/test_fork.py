"""Fork safety: gRPC does not survive fork(); gee-h says so instead of hanging.

Each test forks with multiprocessing's "fork" start method against a real etcd. The child
reports through its exit code and a JSON file, writes its stderr (fd 2) to a file, and is
waited for with a bound: a child that hangs fails the test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import geeh
from geeh.testing import LocalEtcdCluster

CHILD_BOUND = 20.0  # seconds; the child needs well under one
GRPC_FORK_WARNINGS = ("Fork support", "fork_posix", "Other threads are currently calling into gRPC")


def _in_child(out: Path, body: Callable[[], dict[str, Any]]) -> None:
    # Runs in the forked child: stderr to a file first, so gRPC's own lines are kept too.
    err = os.open(out.with_suffix(".stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    # Where a hang is, if one: dumped to that file (pytest's sys.stderr is not fd 2).
    faulthandler.dump_traceback_later(CHILD_BOUND / 2, exit=True, file=os.fdopen(err, "w"))
    try:
        result = body()
    except BaseException as exc:  # everything is reported to the parent
        result = {"unexpected": f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(result))
    os._exit(0 if "unexpected" not in result else 3)


def run_forked(tmp_path: Path, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork, run ``body()`` in the child, and return what it reported (or fail the test)."""
    out = tmp_path / f"child-{os.getpid()}.json"
    process = multiprocessing.get_context("fork").Process(target=_in_child, args=(out, body))
    process.start()
    process.join(CHILD_BOUND)
    if process.is_alive():
        process.kill()
        process.join(5)
        pytest.fail(f"the forked child hung: still running after {CHILD_BOUND:g}s")
    stderr_file = out.with_suffix(".stderr")
    stderr = stderr_file.read_text(errors="replace") if stderr_file.exists() else ""
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    assert process.exitcode == 0, f"child exited {process.exitcode}: {result}\n{stderr}"
    for warning in GRPC_FORK_WARNINGS:
        assert warning not in stderr, f"gRPC fork warning in the child's stderr: {stderr}"
    return result


async def _errors(*calls: Callable[[], Any]) -> list[str]:
    """The type and message of what each call raised (awaiting it if it returns one)."""
    found = []
    for call in calls:
        try:
            result = call()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await asyncio.wait_for(result, 10)
            found.append("no error")
        except Exception as exc:
            found.append(f"{type(exc).__name__}: {exc}")
    return found


async def test_client_from_before_fork_raises_forked_error(
    etcd: LocalEtcdCluster, name: str, tmp_path: Path
) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        election = client.election(name)
        leadership = await election.campaign(b"parent", ttl=5)
        await client.put(f"{name}-data", "parent")
        parent = os.getpid()

        def child() -> dict[str, Any]:
            async def main() -> dict[str, Any]:
                errors = await _errors(
                    lambda: client.get(f"{name}-data"),
                    lambda: client.election(name),
                    lambda: client.session(ttl=5),
                    lambda: client.connect(),
                    lambda: leadership.put(f"{name}-data", "child"),
                )
                await asyncio.wait_for(client.close(), 10)  # harmless: drops, never resigns
                return {"errors": errors, "closed": client.closed}

            return asyncio.run(main())

        result = await asyncio.to_thread(run_forked, tmp_path, child)
        assert len(result["errors"]) == 5
        for error in result["errors"]:
            assert error.startswith("ForkedError: "), error
            assert f"created in process {parent}" in error
            assert "after forking" in error
        assert result["closed"] is True
        # The parent goes on: the child's close() neither resigned nor revoked anything.
        assert leadership.is_leader
        assert (await election.leader()) is not None
        assert (await client.get(f"{name}-data")) is not None
        await leadership.put(f"{name}-data", "still the leader")
        await leadership.resign()


def _fresh_parent(endpoints: list[str], name: str, tmp: str) -> None:
    """A process that never used gRPC forks a child that makes its own client."""

    def child() -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            async with geeh.Client(endpoints) as mine:
                election = mine.election(name)
                async with election.campaign(b"child", ttl=5) as leadership:
                    async with election.observe() as changes:
                        seen = await asyncio.wait_for(anext(changes), 10)
                    await leadership.put(f"{name}-data", "child")
                    assert seen is not None
                    return {"token": leadership.token, "observed": seen.value.decode()}

        return asyncio.run(main())

    async def after() -> dict[str, Any]:  # and the parent goes on, with a client of its own
        async with geeh.Client(endpoints) as client:
            written = await client.get(f"{name}-data")
            leader = await client.election(name).leader()
            return {"written": written.value.decode() if written else None, "leader": leader}

    result = run_forked(Path(tmp), child)
    result["after"] = asyncio.run(after())
    result["after"]["leader"] = repr(result["after"]["leader"])
    (Path(tmp) / "fresh.json").write_text(json.dumps(result))


def test_client_made_in_child_works(etcd: LocalEtcdCluster, name: str, tmp_path: Path) -> None:
    # This test process has used gRPC already: the forking parent is a fresh one (spawned).
    parent = multiprocessing.get_context("spawn").Process(
        target=_fresh_parent, args=(etcd.endpoints, name, str(tmp_path))
    )
    parent.start()
    parent.join(3 * CHILD_BOUND)
    if parent.is_alive():
        parent.kill()
        parent.join(5)
        pytest.fail("the spawned parent hung")
    assert parent.exitcode == 0
    result = json.loads((tmp_path / "fresh.json").read_text())
    assert result["token"] > 0 and result["observed"] == "child"
    assert result["after"] == {"written": "child", "leader": "None"}  # the child resigned


@pytest.mark.parametrize("closed", [False, True], ids=["connected", "closed"])
async def test_client_in_child_of_a_grpc_parent_fails_fast(
    etcd: LocalEtcdCluster, name: str, tmp_path: Path, closed: bool
) -> None:
    # A child of a process that had used gRPC (even with its clients closed since) cannot
    # use gRPC: its poller thread is gone, its locks may be held. Say so, at once.
    client = geeh.Client(etcd.endpoints)
    await client.connect()
    await client.put(f"{name}-data", "parent")
    if closed:
        await client.close()
    parent = os.getpid()

    def child() -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            mine = geeh.Client(etcd.endpoints)
            errors = await _errors(mine.connect)
            await mine.close()
            return {"errors": errors}

        return asyncio.run(main())

    result = await asyncio.to_thread(run_forked, tmp_path, child)
    [error] = result["errors"]
    assert error.startswith("ForkedError: "), error
    assert f"forked from process {parent}" in error and "spawn" in error
    if not closed:
        assert (await client.get(f"{name}-data")) is not None  # the parent goes on
        await client.close()


def test_queue_from_before_fork_raises_forked_error(
    etcd: LocalEtcdCluster, name: str, tmp_path: Path
) -> None:
    with geeh.ActiveCompletionQueue() as queue:
        election = geeh.LeaderElection(queue, etcd.endpoints, name, "parent", ttl=5)
        assert election.campaign().result(timeout=10)
        observer = geeh.watch_election(queue, etcd.endpoints, name)
        parent = os.getpid()

        def child() -> dict[str, Any]:
            async def wait() -> None:
                await asyncio.sleep(0)

            errors = []
            for call in (
                election.campaign,
                lambda: election.elected,
                lambda: election.proclaim("child"),
                lambda: election.put(f"{name}-data", "child"),
                lambda: election.on_lost(print),
                lambda: observer.subscribe(print),
                lambda: queue.client(etcd.endpoints),
                lambda: queue.call(wait(), timeout=5),
                lambda: geeh.LeaderElection(queue, etcd.endpoints, name, "child"),
            ):
                try:
                    call()
                    errors.append("no error")
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
            election.close()  # harmless: the candidate is the parent's
            observer.close()
            queue.close()
            return {"errors": errors}

        result = run_forked(tmp_path, child)
        assert len(result["errors"]) == 9
        for error in result["errors"]:
            assert error.startswith("ForkedError: "), result["errors"]
            assert f"created in process {parent}" in error
        # The parent goes on: still the leader, and its queue still serves it.
        assert election.elected
        election.proclaim("still the leader")
        assert election.put(f"{name}-data", "parent", timeout=10) > 0
        election.resign(timeout=10)

"""Permissions changed at run time: read on one election revoked and restored while others run.

A small etcd of its own, with auth enabled (the main cluster's processes need no
credentials), and one process (``python -m chaos.rbac``) that holds a single client logged in
as a user who may read every election of this lane, observing all of them over one watch
stream, and a root client that keeps changing their leaders in turn. The nemesis's
``revoke-read`` fault takes read on REVOKED away, cuts the observer's connections (so that
every watch is re-created while it is refused), and gives read back when healed.

What must hold (checker property 9): the observers of the other elections see every leader,
in order and without stalling; the observer of REVOKED ends with a permission error while
it is refused, then observes again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import geeh

from .cluster import LocalEtcdCluster, TcpProxy
from .history import Log
from .proc import Child, die_with_parent, stop_all

ELECTIONS = ("chaos-rbac-0", "chaos-rbac-1", "chaos-rbac-2")
REVOKED = ELECTIONS[0]
USER, PASSWORD, ROOT_PASSWORD = "chaos-reader", "reader-secret", "root-secret"
ROLE = "chaos-read"  # read on REVOKED only: the role the fault takes away


class RbacLane:
    """The lane's etcd, the proxy in front of it for the observer, and the process."""

    def __init__(self, rundir: Path, etcd: str | None) -> None:
        logs = rundir / "rbac-etcd"
        logs.mkdir(exist_ok=True)
        self.cluster = LocalEtcdCluster(1, etcd_bin=etcd, log_dir=str(logs))
        self.rundir = rundir
        self.proxy: TcpProxy | None = None
        self.child: Child | None = None
        self._auth = False  # etcdctl logs in as root once auth is on

    def start(self) -> None:
        """Start etcd, set up the user and the roles, enable auth (blocking: from a thread)."""
        self.cluster.start()
        self.etcdctl("user", "add", "root", f"--new-user-password={ROOT_PASSWORD}")
        self.etcdctl("user", "add", USER, f"--new-user-password={PASSWORD}")
        self.etcdctl("role", "add", "chaos-others")
        for election in ELECTIONS[1:]:
            self.etcdctl("role", "grant-permission", "--prefix=true", "chaos-others", "read",
                         f"{election}/")  # fmt: skip
        self.etcdctl("user", "grant-role", USER, "chaos-others")
        self.etcdctl("role", "add", ROLE)
        self.etcdctl("role", "grant-permission", "--prefix=true", ROLE, "read", f"{REVOKED}/")
        self.etcdctl("user", "grant-role", USER, ROLE)
        self.etcdctl("auth", "enable")
        self._auth = True
        direct = self.cluster.endpoints[0]
        host, port = direct.rsplit(":", 1)
        self.proxy = TcpProxy(host, int(port)).start()

    def spawn(self) -> Child:
        """Start the process (from the main thread: its parent-death signal follows it)."""
        assert self.proxy is not None, "start() first"
        direct = self.cluster.endpoints[0]
        args = ["--endpoints", self.proxy.endpoint, "--direct", direct,
                "--out", str(self.rundir / "rbac.jsonl")]  # fmt: skip
        self.child = Child("rbac", "chaos.rbac", args, self.rundir)
        self.child.start()
        return self.child

    def etcdctl(self, *args: str) -> None:
        root = [f"--user=root:{ROOT_PASSWORD}"] if self._auth else []
        self.cluster.etcdctl(*root, *args)

    def revoke(self) -> None:
        """Take read on REVOKED away, and cut the observer's connections."""
        self.etcdctl("user", "revoke-role", USER, ROLE)
        if self.proxy is not None:
            self.proxy.cut()

    def restore(self) -> None:
        self.etcdctl("user", "grant-role", USER, ROLE)

    def stop(self, grace: float) -> dict[str, str]:
        return stop_all([self.child], grace) if self.child is not None else {}

    def close(self) -> None:
        self.stop(5.0)
        if self.proxy is not None:
            self.proxy.close()
        self.cluster.close()


# -- the process ------------------------------------------------------------------------------


async def _observe(client: geeh.Client, election: str, log: Log) -> None:
    """Log every leader of ``election``; a permission error is logged, then observe again."""
    refused = False
    while True:
        try:
            async for leader in client.election(election).observe():
                refused = False
                log.write("leader", election=election,
                          value=leader.value_str if leader is not None else None)  # fmt: skip
        except geeh.EtcdError as err:
            if err.code != "PERMISSION_DENIED":
                raise
            if not refused:
                log.write("refused", election=election, error=str(err))
            refused = True
            await asyncio.sleep(0.5)


async def _write(client: geeh.Client, log: Log, stop: asyncio.Event) -> None:
    """Change each election's leader in turn, until ``stop``."""
    n = 0
    while not stop.is_set():
        election = ELECTIONS[n % len(ELECTIONS)]
        value = f"v{n}"
        async with client.election(election).campaign(value, ttl=5):
            log.write("wrote", election=election, value=value)
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


async def _serve(args: argparse.Namespace) -> None:
    log = Log(Path(args.out))
    log.write("start", pid=os.getpid())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    reader = geeh.Client(args.endpoints.split(","), username=USER, password=PASSWORD)
    root = geeh.Client([args.direct], username="root", password=ROOT_PASSWORD)
    async with reader, root, asyncio.TaskGroup() as group:
        observers = [group.create_task(_observe(reader, e, log)) for e in ELECTIONS]
        await _write(root, log, stop)
        # Let the observers report the last changes, then stop them.
        await asyncio.sleep(3.0)
        for task in observers:
            task.cancel()
    log.write("stop")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.rbac")
    parser.add_argument("--endpoints", required=True, help="the observer's, comma-separated")
    parser.add_argument("--direct", required=True, help="the writer's endpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()

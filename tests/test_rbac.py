"""Least privilege: a user whose only role is readwrite on the election's prefix.

What etcd 3.4 and 3.5 let such a user do was found by these tests: everything an election
needs (campaign, proclaim, resign, observe, leader, candidates with their leases' TTL, fenced
writes inside the prefix, keepalive, revoke), and also member discovery (MemberList), Status
and watch progress requests, which etcd does not check. Only Compact (root only) and keys
outside the prefix are refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ETCD_BINARIES
from support.wait import eventually, within

import geeh
import geeh.watch
from geeh._proto import rpc_pb2
from geeh.cluster import cluster_status
from geeh.net.retry import PUT
from geeh.testing import LocalEtcdCluster

NAME = "payments"  # the service's election; its role covers "payments/" only
# A leader's own data must not be under the election's prefix (it would count as a candidate):
# a service that writes data names its election one level down and keeps the data beside it.
LEADER = f"{NAME}/leader"
DATA = f"{NAME}/config"
USER, PASSWORD = "payments-svc", "svc-secret"
ROOT_PASSWORD = "root-secret"


@pytest.fixture(scope="module", params=sorted(ETCD_BINARIES), ids=lambda v: f"etcd{v}")
def limited(request: pytest.FixtureRequest) -> Iterator[LocalEtcdCluster]:
    """etcd with auth enabled and a service user whose only role is readwrite on NAME/."""
    cluster = LocalEtcdCluster(1, etcd_bin=ETCD_BINARIES[request.param])
    cluster.start()
    try:
        for args in (
            ["user", "add", "root", f"--new-user-password={ROOT_PASSWORD}"],
            ["role", "add", "payments"],
            ["role", "grant-permission", "--prefix=true", "payments", "readwrite", f"{NAME}/"],
            ["user", "add", USER, f"--new-user-password={PASSWORD}"],
            ["user", "grant-role", USER, "payments"],
            ["auth", "enable"],
        ):
            cluster.etcdctl(*args)
        yield cluster
    finally:
        cluster.close()


def service(cluster: LocalEtcdCluster, *, discover: bool = False) -> geeh.Client:
    """A client logged in as the prefix-only service user."""
    return geeh.Client(cluster.endpoints, username=USER, password=PASSWORD, discover=discover)


def root(cluster: LocalEtcdCluster) -> geeh.Client:
    return geeh.Client(cluster.endpoints, username="root", password=ROOT_PASSWORD)


async def test_the_prefix_is_enough_for_an_election(limited: LocalEtcdCluster) -> None:
    """Campaign, hand-off, proclaim, observe, leader, candidates (TTLs), fenced writes,
    resign and the lease's revoke on close, all as the prefix-only user."""
    async with service(limited) as first, service(limited) as second:
        election = first.election(NAME)
        async with election.observe() as changes:
            assert await within(anext(changes), 5, "no leader yet") is None
            leading = await within(election.campaign(b"one", ttl=5), 5, "campaign")
            seen = await within(anext(changes), 5, "the leader observed")
            assert seen is not None and seen.key == leading.key
            waiting = asyncio.ensure_future(second.election(NAME).campaign(b"two", ttl=5))
            await eventually(
                lambda: _count(election.candidates(ttl=False), 2), what="the second candidate"
            )
            line = await election.candidates(ttl=True)
            assert [c.value for c in line] == [b"one", b"two"]
            assert all(c.ttl is not None and c.ttl > 0 for c in line), line
            await leading.proclaim(b"one again")
            seen = await within(anext(changes), 5, "the proclaimed value observed")
            assert seen is not None and seen.value == b"one again"
            await leading.resign()
            successor = await within(waiting, 5, "hand-off to the second candidate")
            seen = await within(anext(changes), 5, "the successor observed")
            assert seen is not None and seen.key == successor.key
            current = await election.leader()
            assert current is not None and current.value == b"two"
        assert successor.is_leader
    # The second client's close revoked its lease and with it the key.
    async with root(limited) as admin:
        assert await admin.election(NAME).candidates() == []


async def _count(candidates: Any, n: int) -> bool:
    return len(await candidates) == n


async def test_fenced_writes_inside_the_prefix_only(limited: LocalEtcdCluster) -> None:
    async with (
        service(limited) as client,
        client.election(LEADER).campaign(b"v", ttl=5) as leadership,
    ):
        assert await leadership.put(DATA, b"v1") > 0
        assert await leadership.delete(DATA) > 0
        with pytest.raises(geeh.EtcdError, match="permission denied") as refused:
            await leadership.put("elsewhere/config", b"v")
        assert refused.value.code == "PERMISSION_DENIED"
        assert leadership.is_leader, "a refused write is not a lost leadership"


async def test_discovery_and_status_need_no_permission(limited: LocalEtcdCluster) -> None:
    """MemberList and Status are not checked by etcd: discovery and `geeh status` work."""
    async with service(limited, discover=True) as client:
        status = await within(cluster_status(client.core.transport), 5, "cluster status")
        assert status.healthy, status
        assert [m.endpoint for m in status.members] == limited.endpoints


async def test_watch_probes_need_no_permission(
    limited: LocalEtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observer's idle stream is probed with progress requests, which a prefix-only user
    may send: the member keeps answering and is not left."""
    monkeypatch.setattr(geeh.watch, "PROBE_IDLE", 0.2)
    # An unanswered probe would leave the member after PROBE_TIMEOUT.
    monkeypatch.setattr(geeh.watch, "PROBE_TIMEOUT", 0.5)
    async with service(limited) as client, service(limited) as other:
        transport = client.core.transport
        hub = client.core.watches
        probes = 0
        send = hub.send

        def counting(request: Any) -> bool:
            nonlocal probes
            probes += request.HasField("progress_request")
            return send(request)

        monkeypatch.setattr(hub, "send", counting)
        async with client.election(NAME).observe() as changes:
            assert await within(anext(changes), 5, "no leader yet") is None
            generation = transport.generation
            await eventually(lambda: probes >= 3, what="three progress requests")
            assert transport.generation == generation, "the member was left after a probe"
            leadership = await within(other.election(NAME).campaign(b"v", ttl=5), 5, "campaign")
            seen = await within(anext(changes), 5, "the leader observed after the probes")
            assert seen is not None and seen.key == leadership.key
            await leadership.resign()


async def test_compact_needs_root_and_says_so(limited: LocalEtcdCluster) -> None:
    async with service(limited) as client:
        with pytest.raises(geeh.EtcdError, match="root") as refused:
            await client.compact()
        assert refused.value.code == "PERMISSION_DENIED"
    async with root(limited) as admin:
        assert await admin.compact() > 0


async def run_geeh(cluster: LocalEtcdCluster, *args: str) -> tuple[int, str, str]:
    """The geeh command as the prefix-only user, its password in GEEH_PASSWORD (not argv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "GEEH_"))}
    env.update(GEEH_ENDPOINTS=",".join(cluster.endpoints), GEEH_USER=USER, GEEH_PASSWORD=PASSWORD)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "geeh.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await within(process.communicate(), 30, f"geeh {' '.join(args)}")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_needs_no_more_than_the_prefix(limited: LocalEtcdCluster) -> None:
    """`geeh elect`, `leader`, `candidates` and `status` as the prefix-only user."""
    elect = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "geeh.cli", "--endpoints", ",".join(limited.endpoints),
        "--user", USER, "--password-file", "/dev/stdin", "elect", LEADER, "cli-leader",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert elect.stdin is not None and elect.stdout is not None
    elect.stdin.write(PASSWORD.encode() + b"\n")
    elect.stdin.close()
    try:
        key = await within(elect.stdout.readline(), 30, "geeh elect wins")
        assert key.startswith(f"{LEADER}/".encode())
        code, out, err = await run_geeh(limited, "leader", LEADER)
        assert code == 0 and out.splitlines()[1] == "cli-leader", err
        code, out, err = await run_geeh(limited, "candidates", LEADER, "--json")
        assert code == 0 and "cli-leader" in out, err
        code, out, err = await run_geeh(limited, "status")
        assert code == 0, err
    finally:
        elect.send_signal(signal.SIGINT)
        await within(elect.wait(), 30, "geeh elect stops")
    assert elect.returncode == 0


async def test_read_revoked_at_run_time_ends_that_observer_only(limited: LocalEtcdCluster) -> None:
    """Read on one election is revoked while both are observed, and the stream breaks once.
    The refused observer ends with a permission error naming the key and the user, after one
    re-authentication; the observer of the other election goes on getting every change."""
    audit = "audit"  # a second election the user may read until its role is taken away
    as_root = f"--user=root:{ROOT_PASSWORD}"
    limited.etcdctl(as_root, "role", "add", audit)
    limited.etcdctl(as_root, "role", "grant-permission", "--prefix=true", audit, "read", "audit/")
    limited.etcdctl(as_root, "user", "grant-role", USER, audit)
    try:
        async with service(limited) as client, root(limited) as admin:
            # The refused election's watch is the oldest: a check made before re-opening
            # would read its key first.
            refused = client.election(audit).observe()
            assert await within(anext(refused), 5, "no audit leader yet") is None
            await admin.core.transport.call(PUT, rpc_pb2.PutRequest(key=b"elsewhere", value=b"x"))
            allowed = client.election(NAME).observe()
            assert await within(anext(allowed), 5, "no payments leader yet") is None
            auth = client.core.transport.auth
            assert auth is not None
            renewals = auth.renewals
            limited.etcdctl(as_root, "user", "revoke-role", USER, audit)
            client.core.transport.fail(client.core.transport.endpoint, "test: the stream breaks")
            with pytest.raises(geeh.PermissionDenied, match=rf"audit/.*'{USER}'"):
                await within(anext(refused), 10, "the refused observer to end")
            for value in (b"one", b"two"):
                async with admin.election(NAME).campaign(value, ttl=5) as leading:
                    seen = await within(anext(allowed), 5, "the permitted observer's change")
                    assert seen is not None and seen.key == leading.key
                assert await within(anext(allowed), 5, "the resignation observed") is None
            assert auth.renewals - renewals <= 1, "one re-authentication, no more"
            await allowed.aclose()
    finally:
        limited.etcdctl(as_root, "user", "revoke-role", USER, audit, check=False)
        limited.etcdctl(as_root, "role", "delete", audit, check=False)


async def test_transfer_with_and_without_permission_on_the_intent(
    limited: LocalEtcdCluster,
) -> None:
    """Issue 19. For "payments/leader" the intent key ("payments/leader.transfer") is inside
    the role's prefix: the transfer works. For "payments" it is not ("payments.transfer"):
    waiting candidates do not step aside (their watches stay healthy: a hand-off still goes
    through), and the transfer fails in one line, the leader leading on."""
    async with service(limited) as a, service(limited) as b, service(limited) as c:
        for name, allowed in ((LEADER, True), (NAME, False)):
            leading = await a.election(name).campaign(b"one", ttl=5)
            second = asyncio.ensure_future(b.election(name).campaign(b"two", ttl=5))
            await eventually(
                lambda n=name: _count(a.election(n).candidates(ttl=False), 2), what="two"
            )
            third = asyncio.ensure_future(c.election(name).campaign(b"three", ttl=5))
            await eventually(
                lambda n=name: _count(a.election(n).candidates(ttl=False), 3), what="three"
            )
            if allowed:
                await leading.transfer(to=b"three", timeout=5)
                new = await within(third, 5, "the target to lead")
                await new.resign()
                await (await within(second, 5, "the second to lead")).resign()
                continue
            with pytest.raises(geeh.TransferFailed, match="may not write the transfer intent"):
                await leading.transfer(to=b"three", timeout=1)
            assert leading.is_leader
            await leading.resign()
            await (await within(second, 5, "the next in line to lead")).resign()
            await (await within(third, 5, "the last to lead")).resign()

"""The fault helpers of geeh.testing's clusters, each against real etcd, through the plugin's
fixtures (``etcd`` is shared and healed after each test; ``etcd_factory`` makes new ones)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable

import pytest
from support.wait import within

import geeh
from geeh.testing import EtcdFactory, LocalEtcdCluster, find_etcdctl

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test extra
    psutil = None

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def etcdctl_at(endpoint: str, *args: str, patience: int = 10) -> subprocess.CompletedProcess[str]:
    """etcdctl against one endpoint only, giving up after *patience* seconds (short where
    the test expects a failure, long where a busy machine must not fail it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    flags = [f"--endpoints={endpoint}", "--dial-timeout=2s", f"--command-timeout={patience}s"]
    return subprocess.run(
        [find_etcdctl(), *flags, *args],
        capture_output=True,
        text=True,
        timeout=patience + 20,
        env=env,
        check=False,
    )


def local_value(cluster: LocalEtcdCluster, member: int, key: str) -> str | None:
    """*key* as member *member* itself has it (serializable read, past any proxy)."""
    out = etcdctl_at(cluster.direct_endpoints[member], "get", key, "--consistency=s")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    return lines[1] if len(lines) == 2 else None


def wait_until(cond: Callable[[], object], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_kill_then_restart_keeps_the_data(etcd: LocalEtcdCluster, name: str) -> None:
    etcd.etcdctl("put", name, "kept")
    pid = etcd.pid(0)
    etcd.kill(0)
    assert not etcd.is_running(0)
    assert pid is not None and (psutil is None or not psutil.pid_exists(pid))
    assert etcdctl_at(etcd.endpoints[0], "get", name, patience=2).returncode != 0
    etcd.restart(0)
    assert etcd.pid(0) not in (None, pid)
    assert etcd.etcdctl("get", name, "--print-value-only").stdout.strip() == "kept"


def test_pause_freezes_until_resume(etcd: LocalEtcdCluster, name: str) -> None:
    etcd.pause(0)
    assert etcd.is_paused(0)
    if psutil is not None:
        assert psutil.Process(etcd.pid(0)).status() == psutil.STATUS_STOPPED
    assert etcdctl_at(etcd.endpoints[0], "put", name, "v", patience=2).returncode != 0
    etcd.resume(0)
    assert not etcd.is_paused(0)
    assert etcdctl_at(etcd.endpoints[0], "put", name, "v").returncode == 0


def test_pause_for_returns_at_once_and_resumes_by_itself(etcd: LocalEtcdCluster) -> None:
    started = time.monotonic()
    etcd.pause_for(0, 1.0)
    assert etcd.is_paused(0), "pause_for() blocked until the pause was over"
    wait_until(lambda: not etcd.is_paused(0), "the member to resume by itself")
    assert time.monotonic() - started >= 1.0, "resumed before the time was up"
    etcd.wait_healthy(10)


async def test_blackhole_silences_the_member_for_clients(etcd: LocalEtcdCluster, name: str) -> None:
    async with geeh.Client(
        etcd.endpoints, request_timeout=1, attempt_timeout=0.5, discover=False
    ) as client:
        election = client.election(name)
        assert await election.leader() is None
        etcd.blackhole(0)
        with pytest.raises(geeh.EtcdUnavailable):
            await election.leader()
        assert etcd.is_healthy(0), "the member itself must stay up"
        etcd.heal()
        assert await within(election.leader(), 10, "a read after heal()") is None


def test_delay_slows_each_way(etcd: LocalEtcdCluster) -> None:
    etcd.delay(0, 150)
    started = time.monotonic()
    with _HTTP.open(etcd.urls[0] + "/version", timeout=10) as response:
        assert json.loads(response.read())["etcdserver"]
    assert time.monotonic() - started >= 0.3, "request and response are each 150 ms late"
    etcd.heal()
    assert etcd.proxy(0).mode == "pass"


def test_compact_makes_old_revisions_unreadable(etcd: LocalEtcdCluster, name: str) -> None:
    first = json.loads(etcd.etcdctl("put", name, "v1", "-w", "json").stdout)["header"]["revision"]
    etcd.etcdctl("put", name, "v2")
    old = etcd.etcdctl("get", name, f"--rev={first}", "--print-value-only")
    assert old.stdout.strip() == "v1"
    revision = etcd.compact()
    assert revision > first
    gone = etcd.etcdctl("get", name, f"--rev={first}", check=False)
    assert gone.returncode != 0 and "compacted" in gone.stderr
    assert etcd.compact() == revision  # nothing new: compacting again is harmless


async def test_expire_ends_a_leadership_now(
    etcd: LocalEtcdCluster, client: geeh.Client, name: str
) -> None:
    election = client.election(name)
    leadership = await election.campaign(b"v", ttl=60)
    etcd.expire(leadership)  # a Leadership, a Session, a Leader or a lease ID
    assert await within(leadership.lost.wait(), 5, "the loss, long before the 60 s TTL")
    assert await election.leader() is None
    with pytest.raises(LookupError, match="not found"):
        etcd.expire(leadership.lease)


def test_partition_splits_members_and_clients(etcd_factory: EtcdFactory, name: str) -> None:
    cluster = etcd_factory(members=3)
    # Member 2 cut off: the clients' side keeps the quorum and goes on without it.
    cluster.partition([0, 1])
    wait_until(lambda: not cluster.is_healthy(2), "member 2 to lose its leader")
    cluster.wait_healthy(15, members=[0, 1])  # with a new raft leader if 2 was it
    assert etcdctl_at(cluster.endpoints[0], "put", name, "during").returncode == 0
    assert etcdctl_at(cluster.endpoints[2], "get", name, patience=2).returncode != 0, (
        "client reached 2"
    )
    assert local_value(cluster, 2, name) is None, "a write crossed the partition"
    cluster.heal()
    wait_until(lambda: local_value(cluster, 2, name) == "during", "member 2 to catch up")

    # The clients with a minority: the member they reach has no leader.
    cluster.partition([0])
    wait_until(lambda: not cluster.is_healthy(0), "member 0 to lose its leader")
    wait_until(lambda: cluster.leader_index() in (1, 2), "a leader on the far side")
    assert etcdctl_at(cluster.endpoints[0], "put", name, "minority", patience=2).returncode != 0
    assert etcdctl_at(cluster.direct_endpoints[1], "put", name, "majority").returncode == 0
    cluster.heal()
    assert etcdctl_at(cluster.endpoints[0], "get", name).returncode == 0
    wait_until(lambda: local_value(cluster, 0, name) == "majority", "member 0 to catch up")


def test_heal_undoes_every_fault(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(members=3)
    pid = cluster.pid(0)
    cluster.kill(0)
    cluster.pause_for(1, 600)
    cluster.blackhole(2)
    cluster.heal()
    assert cluster.pid(0) not in (None, pid)
    assert not cluster.is_paused(1)
    assert [cluster.is_healthy(i) for i in range(3)] == [True, True, True]
    for endpoint in cluster.endpoints:
        assert etcdctl_at(endpoint, "endpoint", "health").returncode == 0, endpoint


def test_network_faults_need_proxies(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(proxies=False)
    assert not cluster.has_proxies
    assert cluster.endpoints == cluster.direct_endpoints
    for fault in (lambda: cluster.blackhole(0), lambda: cluster.partition([0])):
        with pytest.raises(RuntimeError, match="proxies=True"):
            fault()


def test_proxies_are_what_clients_and_members_are_told(etcd_factory: EtcdFactory) -> None:
    cluster = etcd_factory(members=3)
    assert cluster.has_proxies
    assert set(cluster.endpoints).isdisjoint(cluster.direct_endpoints)
    listed = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)["members"]
    # MemberList gives the proxies, so a client that discovers members stays behind them.
    assert sorted(u for m in listed for u in m["clientURLs"]) == sorted(cluster.urls)


def test_keys_and_wait_for_keys(etcd: LocalEtcdCluster, name: str) -> None:
    assert etcd.keys(f"{name}/") == []
    for key in (f"{name}/a", f"{name}/b", f"{name}0"):  # "NAME0" is not under "NAME/"
        etcd.etcdctl("put", key, "v")
    assert etcd.wait_for_keys(f"{name}/", 2) == [f"{name}/a".encode(), f"{name}/b".encode()]
    with pytest.raises(TimeoutError, match=r"2 keys under .* wanted 3"):
        etcd.wait_for_keys(f"{name}/", 3, timeout=0.2)

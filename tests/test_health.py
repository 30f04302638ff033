"""geeh.health: /healthz and /leader flip with the client's state, against a real etcd."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
from support.wait import eventually, within

import geeh
from geeh._proto import rpc_pb2
from geeh.health import HealthServer, parse_address
from geeh.net.retry import LEASE_REVOKE
from geeh.testing import EtcdFactory, LocalEtcdCluster, TcpProxy, free_port


def fetch(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, Any]:
    """One request; (status, JSON body or None)."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        connection.close()


async def get(server: HealthServer, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(fetch, server.address, path)


async def status(server: HealthServer, path: str) -> int:
    return (await get(server, path))[0]


async def ok(server: HealthServer, path: str) -> bool:
    return await status(server, path) == 200


async def down(server: HealthServer, path: str) -> bool:
    return await status(server, path) == 503


async def test_leader_flips_on_win_revoke_and_delete(etcd: LocalEtcdCluster, name: str) -> None:
    async with (
        geeh.Client(etcd.endpoints) as client,
        geeh.Client(etcd.endpoints) as operator,
        HealthServer(client, election=name) as server,
    ):
        assert await get(server, "/healthz") == (200, {"status": "ok"})
        assert await get(server, "/leader") == (
            503,
            {"election": name, "key": None, "token": None, "since": None},
        )
        leadership = await within(client.election(name).campaign(b"v", ttl=5), 5, "campaign")
        code, body = await get(server, "/leader")
        assert code == 200
        assert body["election"] == name
        assert body["key"] == leadership.key.decode()
        assert body["token"] == leadership.token
        assert body["since"].endswith("+00:00")

        # Lease revoked from outside: not leader any more; healthy again once it is gone.
        await operator.core.transport.call(
            LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=leadership.lease)
        )
        await within(leadership.lost.wait(), 5, "loss")
        assert await status(server, "/leader") == 503
        await eventually(lambda: ok(server, "/healthz"), what="healthz")

        # Key deleted from outside.
        again = await within(client.election(name).campaign(b"v", ttl=5), 5, "campaign")
        code, body = await get(server, "/leader")
        assert code == 200 and body["token"] == again.token > leadership.token
        await operator.delete(again.key)
        await within(again.lost.wait(), 5, "loss")
        assert await status(server, "/leader") == 503

        # A resign ends it too; another election's leadership does not count.
        third = await client.election(name).campaign(b"v", ttl=5)
        other = await client.election(name + "-other").campaign(b"v", ttl=5)
        assert await status(server, "/leader") == 200
        await third.resign()
        assert await status(server, "/leader") == 503
        await other.resign()


async def test_probes_when_etcd_stops_and_returns(etcd_factory: EtcdFactory, name: str) -> None:
    cluster = etcd_factory()
    async with (
        geeh.Client(cluster.endpoints, request_timeout=2.0) as client,
        HealthServer(client, election=name, probe_timeout=1.0) as server,
    ):
        leadership = await within(client.election(name).campaign(b"v", ttl=3), 5, "campaign")
        assert await status(server, "/leader") == 200
        assert await status(server, "/healthz") == 200

        await asyncio.to_thread(cluster.kill, 0)
        # /healthz at once (no answer); /leader at the local deadline (no keepalive answered).
        await eventually(lambda: down(server, "/healthz"), what="/healthz 503")
        await within(leadership.lost.wait(), 10, "the loss at the deadline")
        assert await status(server, "/leader") == 503
        assert (await get(server, "/healthz"))[1]["reason"]

        await asyncio.to_thread(cluster.restart, 0)
        await eventually(lambda: ok(server, "/healthz"), timeout=20, what="/healthz 200")
        again = await within(client.election(name).campaign(b"v", ttl=3), 10, "campaign")
        assert await status(server, "/leader") == 200
        await again.resign()


async def test_healthz_is_bounded_when_etcd_goes_silent(etcd: LocalEtcdCluster) -> None:
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        async with (
            geeh.Client([proxy.endpoint]) as client,
            HealthServer(client, probe_timeout=0.5) as server,
        ):
            assert await status(server, "/healthz") == 200
            proxy.blackhole()  # packets dropped: no error, no answer
            code, body = await within(get(server, "/healthz"), 10, "a bounded /healthz")
            assert code == 503 and body["reason"] == "etcd did not answer within 0.5s"
            proxy.pass_through()
            await eventually(lambda: ok(server, "/healthz"), what="/healthz 200 again")


async def test_an_expired_session_is_unhealthy(etcd: LocalEtcdCluster) -> None:
    async with (
        geeh.Client(etcd.endpoints) as client,
        geeh.Client(etcd.endpoints) as operator,
        HealthServer(client) as server,
    ):
        session = await client.session(5)
        assert await status(server, "/healthz") == 200
        await operator.core.transport.call(
            LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=session.lease)
        )
        await within(session.expired.wait(), 10, "the session's end")
        code, body = await get(server, "/healthz")
        assert code == 503 and f"session {session.lease:x}" in body["reason"]
        await session.close()
        assert await status(server, "/healthz") == 200


async def test_a_closed_client_is_unhealthy(etcd: LocalEtcdCluster) -> None:
    client = geeh.Client(etcd.endpoints)
    await client.connect()
    async with HealthServer(client) as server:
        assert await status(server, "/healthz") == 200
        await client.close()
        assert await get(server, "/healthz") == (
            503,
            {"status": "unavailable", "reason": "the client is closed"},
        )


async def test_blocking_form(etcd: LocalEtcdCluster, name: str) -> None:
    def blocking() -> list[int]:
        with geeh.ActiveCompletionQueue() as queue:
            client = queue.client(etcd.endpoints)
            with HealthServer(client, ("127.0.0.1", 0), election=name, queue=queue) as server:
                seen = [fetch(server.address, "/leader")[0]]
                election = geeh.LeaderElection(queue, client, name, "v", ttl=5)
                assert election.campaign().result(10)
                seen.append(fetch(server.address, "/leader")[0])
                seen.append(fetch(server.address, "/healthz")[0])
                election.resign()
                seen.append(fetch(server.address, "/leader")[0])
            server.close()  # twice: harmless
            return seen

    assert await asyncio.to_thread(blocking) == [503, 200, 200, 503]


async def test_blocking_close_after_the_queue_closed(etcd: LocalEtcdCluster) -> None:
    def blocking() -> None:
        queue = geeh.ActiveCompletionQueue()
        server = HealthServer(queue.client(etcd.endpoints), queue=queue).__enter__()
        host, port = server.address
        queue.close()  # the wrong order: the queue, then the server
        server.close()
        with socket.socket() as again:  # the port is free: the socket was closed
            again.bind((host, port))

    await asyncio.to_thread(blocking)


async def test_http_edges_and_a_bounded_close(etcd: LocalEtcdCluster) -> None:
    async with geeh.Client(etcd.endpoints) as client:
        server = await HealthServer(client).start()
        assert (await get(server, "/nope"))[0] == 404
        assert (await asyncio.to_thread(fetch, server.address, "/leader", "POST"))[0] == 405
        assert await asyncio.to_thread(fetch, server.address, "/healthz", "HEAD") == (200, None)
        assert (await get(server, "/healthz?verbose=1"))[0] == 200

        def raw(data: bytes) -> bytes:
            with socket.create_connection(server.address, timeout=10) as sock:
                sock.sendall(data)
                return sock.recv(1024)

        assert (await asyncio.to_thread(raw, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400")
        # A prober that sends half a request and stops does not hold close() up.
        silent = await asyncio.open_connection(*server.address)
        silent[1].write(b"GET /healthz HTTP/1.1\r\n")
        await silent[1].drain()
        assert (await get(server, "/healthz"))[0] == 200  # served meanwhile
        await within(server.aclose(), 5, "close with a silent connection open")
        await server.aclose()
        assert await within(silent[0].read(), 5, "the connection closed") == b""
        silent[1].close()
        with pytest.raises(geeh.ClosedError):
            await server.start()
        assert (await server.probes.healthz())[0] == 200  # the answers, without HTTP


async def test_bad_addresses(etcd: LocalEtcdCluster) -> None:
    for bad in ("nonsense", "host:port", "127.0.0.1:70000", 8080, ("h", "80")):
        with pytest.raises(geeh.InvalidArgument):
            parse_address(bad)  # type: ignore[arg-type]
    assert parse_address(":8080") == ("0.0.0.0", 8080)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    async with geeh.Client(etcd.endpoints) as client:
        with (
            TcpProxy("127.0.0.1", etcd.client_port(0)) as taken,
            pytest.raises(geeh.GeehError, match="cannot serve health at"),
        ):
            await HealthServer(client, ("127.0.0.1", taken.port)).start()
        with pytest.raises(geeh.InvalidArgument, match="queue="):
            HealthServer(client).__enter__()


# -- the CLI: --health-addr -------------------------------------------------------------------


def geeh_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "geeh.cli", *args]


@pytest.mark.parametrize("command", ["elect", "observe", "run"])
async def test_cli_serves_probes(etcd: LocalEtcdCluster, name: str, command: str) -> None:
    port = free_port()
    argv = {
        "elect": ["elect", name, "v"],
        "observe": ["observe", name, "--json"],
        "run": ["run", name, "--", sys.executable, "-c", "print('running', flush=True); input()"],
    }[command]
    where = ["--endpoints", etcd.endpoints[0], "--health-addr", f"127.0.0.1:{port}"]
    cut = argv.index("--") if "--" in argv else len(argv)
    process = await asyncio.create_subprocess_exec(
        *geeh_command(*argv[:cut], *where, *argv[cut:]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        await within(process.stdout.readline(), 15, "the first line")
        address = ("127.0.0.1", port)
        leads = command != "observe"
        assert (await asyncio.to_thread(fetch, address, "/healthz"))[0] == 200
        code, body = await asyncio.to_thread(fetch, address, "/leader")
        assert code == (200 if leads else 503)
        assert body["election"] == name and (body["token"] is not None) == leads
        process.send_signal(signal.SIGTERM)
        assert await within(process.wait(), 10, "exit") in (0, 128 + signal.SIGTERM)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("option", "says"),
    [("--health-addr", "cannot serve health"), ("--metrics-addr", "--metrics-addr")],
)
def test_cli_listen_addresses_are_checked(etcd: LocalEtcdCluster, option: str, says: str) -> None:
    result = subprocess.run(
        geeh_command("elect", "n", "v", option, "nonsense"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as taken:  # a port in use
        result = subprocess.run(
            geeh_command(
                "observe", "n", "--endpoints", etcd.endpoints[0], option,
                f"127.0.0.1:{taken.port}",
            ),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr

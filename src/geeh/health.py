"""Health and readiness over HTTP: ``/healthz`` and ``/leader``, with the standard library only.

::

    async with geeh.Client(endpoints) as client:
        async with HealthServer(client, "0.0.0.0:8080", election="my-election"):
            await client.election("my-election").run(work, b"me")

=========== ================================================================================
path        answer
=========== ================================================================================
/healthz    200 while the client is open, etcd answers a linearizable read (so the cluster
            has quorum) within ``probe_timeout``, and every session of the client is alive;
            503 otherwise. Body: ``{"status": "ok"}`` or ``{"status": "unavailable",
            "reason": ...}``.
/leader     200 while this process leads (the election given, else any), 503 otherwise.
            Body: ``{"election", "key", "token", "since"}``; all but election null when not
            leading; ``since`` is when the term was won, ISO 8601 UTC.
=========== ================================================================================

A Kubernetes liveness probe goes to ``/healthz``, a "route to the leader only" readiness
probe to ``/leader``. :class:`Probes` computes the answers (use it in your own web app's
routes, e.g. an ASGI app); :class:`HealthServer` serves them on a port of their own. Make
either before campaigning: they learn of leaderships from the client's events, so a term
won before they existed is not seen. The server runs on the client's event loop; for the
blocking API, pass the :class:`~geeh.ActiveCompletionQueue` the client lives on and use
``with`` instead.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from typing import Any

from .client import Client
from .completion_queue import ActiveCompletionQueue
from .errors import ClosedError, EtcdError, EtcdUnavailable, GeehError, InvalidArgument
from .keys import election_prefix, show
from .leadership import Leadership
from .listeners import Listener
from .session import Session

__all__ = ["HealthServer", "Probes", "parse_address"]

log = logging.getLogger("geeh.health")

# A probe that sends nothing (or drips bytes) for this long is dropped: a stuck client
# must not hold a connection, and close() must not wait for it.
READ_TIMEOUT = 5.0
MAX_REQUEST = 8192
PROBE_KEY = b"geeh-health"  # read when no election is given: any answer from etcd will do
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
REASONS[503] = "Service Unavailable"


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[v6]:PORT"``, ``":PORT"`` (every interface) or ``(host, port)``."""
    if isinstance(address, tuple):
        host, port = address
    elif isinstance(address, str):
        host, sep, text = address.rpartition(":")
        if not sep or not text.isdigit():
            raise InvalidArgument(f"expected HOST:PORT for the health address, got {address!r}")
        host, port = host.removeprefix("[").removesuffix("]"), int(text)
    else:
        raise InvalidArgument(f"health address must be 'HOST:PORT', not {type(address).__name__}")
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise InvalidArgument(f"health address must be (host, port), got {address!r}")
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"health port must be 0-65535, got {port}")
    return host or "0.0.0.0", port


class _Terms(Listener):
    """The leaderships this client won and still holds, with when each was won."""

    def __init__(self, election: bytes | None) -> None:
        self.election = election
        self.held: dict[int, tuple[Leadership, datetime.datetime]] = {}

    def elected(self, leadership: Leadership, waited: float) -> None:
        if self.election is None or leadership.name == self.election:
            self.held[id(leadership)] = (leadership, datetime.datetime.now(datetime.UTC))

    def lost(self, leadership: Leadership, reason: BaseException) -> None:
        self.held.pop(id(leadership), None)

    def resigned(self, leadership: Leadership) -> None:
        self.held.pop(id(leadership), None)

    def current(self) -> tuple[Leadership, datetime.datetime] | None:
        """The oldest term still led (``is_leader`` reads the session's deadline: exact)."""
        # A snapshot (list() holds the GIL): the loop may change it while another thread asks.
        terms = [(lead, since) for lead, since in list(self.held.values()) if lead.is_leader]
        return min(terms, key=lambda term: term[1]) if terms else None


class Probes:
    """What ``/healthz`` and ``/leader`` answer for ``client`` (see the module): each answer is
    ``(HTTP status, JSON-able body)``. ``election`` limits ``/leader`` to that election;
    ``probe_timeout`` bounds the read that ``/healthz`` makes. Ask on the client's event
    loop (its state is read there). :meth:`close` stops following the client's events
    (idempotent).
    """

    def __init__(
        self,
        client: Client,
        *,
        election: str | bytes | None = None,
        probe_timeout: float = 2.0,
    ) -> None:
        if not isinstance(client, Client):
            raise InvalidArgument(f"client must be a geeh.Client, not {type(client).__name__}")
        if isinstance(probe_timeout, bool) or not probe_timeout > 0:
            raise InvalidArgument(f"probe_timeout must be > 0 seconds, got {probe_timeout!r}")
        self._client = client
        name = election_prefix(election)[:-1] if election is not None else None
        self._name = name
        self._probe_key = name + b"/" if name is not None else PROBE_KEY
        self._probe_timeout = float(probe_timeout)
        self._terms = _Terms(name)
        client.add_listener(self._terms)

    def close(self) -> None:
        """Stop following the client's events."""
        self._client.remove_listener(self._terms)

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        """What ``/healthz`` answers: (status, body)."""
        reason = await self._unhealthy()
        if reason is None:
            return 200, {"status": "ok"}
        return 503, {"status": "unavailable", "reason": reason}

    async def _unhealthy(self) -> str | None:
        if self._client.closed:
            return "the client is closed"
        for session in list(self._client.core.sessions):
            if isinstance(session, Session) and not session.alive:
                return f"session {session.lease:x} has expired"
        try:
            async with asyncio.timeout(self._probe_timeout):
                await self._client.get(self._probe_key)
        except TimeoutError:
            return f"etcd did not answer within {self._probe_timeout:g}s"
        except (EtcdUnavailable, ClosedError) as err:
            return str(err)
        except EtcdError:
            pass  # an answer (such as "permission denied"): etcd is there, with quorum
        return None

    def leader(self) -> tuple[int, dict[str, Any]]:
        """What ``/leader`` answers: (status, body)."""
        election = show(self._name) if self._name is not None else None
        term = self._terms.current()
        if term is None:
            return 503, {"election": election, "key": None, "token": None, "since": None}
        leadership, since = term
        return 200, {
            "election": show(leadership.name),
            "key": show(leadership.key),
            "token": leadership.token,
            "since": since.isoformat(timespec="milliseconds"),
        }


class HealthServer:
    """Serve ``/healthz`` and ``/leader`` for ``client`` at ``address`` (see the module).

    ``address`` is ``"HOST:PORT"`` or ``(host, port)``; port 0 picks a free one, read it back
    from :attr:`address` once started. ``election`` limits ``/leader`` to that election.
    ``async with HealthServer(...)`` on the client's loop, or ``with HealthServer(...,
    queue=queue)`` from blocking code. Closing stops the server and every connection at once;
    it is harmless twice.
    """

    def __init__(
        self,
        client: Client,
        address: str | tuple[str, int] = ("127.0.0.1", 0),
        *,
        election: str | bytes | None = None,
        probe_timeout: float = 2.0,
        queue: ActiveCompletionQueue | None = None,
    ) -> None:
        self._host, self._port = parse_address(address)
        self._queue = queue
        #: What the server answers (also usable directly).
        self.probes = Probes(client, election=election, probe_timeout=probe_timeout)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) served; the port is the real one once started."""
        if self._server is not None and self._server.sockets:
            host, port = self._server.sockets[0].getsockname()[:2]
            return host, port
        return self._host, self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the server (for logs and tests)."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> HealthServer:
        """Listen (on the running loop, the client's). Raises GeehError if it cannot bind."""
        if self._closed:
            raise ClosedError("this health server was closed")
        if self._server is not None:
            return self
        try:
            self._server = await asyncio.start_server(
                self._connection, self._host, self._port, limit=MAX_REQUEST
            )
        except OSError as err:
            self._closed = True
            self.probes.close()
            raise GeehError(
                f"cannot serve health at {self._host}:{self._port}: {err.strerror or err}"
            ) from None
        log.info("serving /healthz and /leader at %s", self.url)
        return self

    async def aclose(self) -> None:
        """Stop listening, drop open connections and wait for them. Idempotent."""
        self._closed = True
        self.probes.close()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = set(self._connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> HealthServer:
        queue = self._blocking_queue()
        return queue.call(self.start(), timeout=10.0)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The blocking form of :meth:`aclose` (needs ``queue``). Idempotent."""
        queue = self._blocking_queue()
        closing = self.aclose()
        try:
            queue.call(closing, timeout=10.0)
        except ClosedError:
            closing.close()  # never started
            # The queue closed first and its loop no longer runs: close the socket from here.
            self._closed = True
            self.probes.close()
            server, self._server = self._server, None
            if server is not None:
                server.close()

    def _blocking_queue(self) -> ActiveCompletionQueue:
        if self._queue is None:
            raise InvalidArgument(
                "use 'async with HealthServer(...)', or pass queue= for the blocking form"
            )
        return self._queue

    # -- HTTP/1.1, just enough for probes -------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            status, body = await self._answer(method, path)
            payload = json.dumps(body).encode() + b"\n"
            writer.write(_response(status, payload, head_only=method == "HEAD"))
            await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the prober went away or sent nonsense: nothing to answer
        except Exception:
            log.exception("health request failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, method: str | None, path: str) -> tuple[int, dict[str, Any]]:
        probes = self.probes
        routes = ("/healthz", "/leader")
        if method is None:
            return 400, {"error": "bad request"}
        if path not in routes:
            return 404, {"error": f"no such path: {path}", "paths": list(routes)}
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method} is not allowed: use GET"}
        if path == "/healthz":
            return await probes.healthz()
        return probes.leader()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.url
        return f"<HealthServer {state}>"


def _request_line(head: bytes) -> tuple[str | None, str]:
    """(method, path) of the request, or (None, "") if its first line is not HTTP."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None, ""
    return parts[0], parts[1].split("?", 1)[0]


def _response(status: int, payload: bytes, *, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + payload

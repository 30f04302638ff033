"""A fault-injecting TCP proxy for tests.

``TcpProxy(host, port)`` listens on 127.0.0.1 and forwards every accepted
connection to ``host:port``.  It runs its own asyncio event loop in a
background thread, so a test can switch its behaviour from any thread (or from
its own event loop, the calls are quick) while clients talk through it:

* :meth:`TcpProxy.pass_through` - forward bytes unchanged (the default);
* :meth:`TcpProxy.delay` - forward every chunk after a delay, both directions;
* :meth:`TcpProxy.blackhole` - keep connections open but drop every byte;
* :meth:`TcpProxy.cut` - reset every open connection, keep accepting new ones;
* :meth:`TcpProxy.refuse` - stop listening (connection refused) until another
  mode is selected;
* :meth:`TcpProxy.cut_after_request` - one-shot: let a request through and
  reset the client connection before the response reaches it.

Every control method takes effect before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar

__all__ = ["TcpProxy"]

Mode = Literal["pass", "delay", "blackhole", "refuse"]

_T = TypeVar("_T")
_CHUNK = 65536
_QUEUE_CHUNKS = 256
_EOF = object()


def _close_socket(sock: socket.socket, *, reset: bool) -> None:
    """Close *sock*, with RST instead of FIN if *reset* (SO_LINGER with timeout 0).

    The socket is first unregistered from the event loop so that pending
    ``sock_recv``/``sock_sendall`` calls can never touch a reused descriptor.
    """
    if sock.fileno() < 0:
        return
    loop = asyncio.get_running_loop()
    loop.remove_reader(sock)
    loop.remove_writer(sock)
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Conn:
    """One proxied connection: the client side and the upstream (target) side."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.tasks: list[asyncio.Task[None]] = []
        # Tasks that only deal with client input: cancelled when the client
        # side is reset by cut_after_request while the upstream side lingers.
        self.client_tasks: list[asyncio.Task[None]] = []
        self.poisoned = False  # bytes were dropped: the streams are no longer intact
        self.cut_pending = False  # cut_after_request matched on this connection
        self.client_gone = False
        self.closed = False
        self.match_tail = b""
        self.eofs = 0

    def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()

    def close(self, *, reset: bool) -> None:
        """Close both sides now, with RST if *reset*, else with FIN."""
        if self.closed:
            return
        self.closed = True
        self._cancel(self.tasks)
        for sock in (self.client, self.upstream):
            if sock is not None:
                _close_socket(sock, reset=reset)
        self.proxy._conns.discard(self)

    def abort(self) -> None:
        """Reset both sides now."""
        self.close(reset=True)

    def abort_client_keep_upstream(self, linger: float) -> None:
        """Reset the client side; drain and discard upstream for *linger* seconds."""
        if self.client_gone or self.closed:
            return
        self.client_gone = True
        self._cancel(self.client_tasks)
        _close_socket(self.client, reset=True)
        asyncio.get_running_loop().call_later(linger, functools.partial(self.close, reset=False))


class TcpProxy:
    """A TCP proxy from ``127.0.0.1:<free port>`` to ``target_host:target_port``.

    Counters (plain ints, readable from any thread): ``bytes_up`` (client to
    target, forwarded), ``bytes_down`` (target to client, delivered),
    ``connections`` (accepted so far), ``cuts`` (connections reset by
    :meth:`cut_after_request`).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self.cuts = 0
        self._mode: Mode = "pass"
        self._delay = 0.0
        self._cut_match: bytes | None = None
        self._cut_armed = False
        self._cut_linger = 1.0
        self._cut_event = threading.Event()
        self._port = listen_port
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- public info --------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (valid after :meth:`start`)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"`` to give to the client instead of the target."""
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"``."""
        return f"http://{self.endpoint}"

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> TcpProxy:
        """Bind the listening socket and start the proxy thread.  Returns self."""
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        if self._closed:
            raise RuntimeError("proxy is closed")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(
            target=run, name=f"TcpProxy->{self.target_host}:{self.target_port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if error:
            self._thread.join()
            self._thread = None
            self._closed = True
            raise error[0]
        return self

    def close(self) -> None:
        """Reset all connections, stop listening and join the thread.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<TcpProxy {self.endpoint} -> {self.target_host}:{self.target_port} "
            f"mode={self._mode} conns={len(self._conns)}>"
        )

    # -- modes ---------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward bytes unchanged (and listen again after :meth:`refuse`)."""
        self._call(self._set_mode("pass"))

    def delay(self, seconds: float) -> None:
        """Forward each chunk *seconds* after it was received, in both directions."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._call(self._set_mode("delay", seconds))

    def blackhole(self) -> None:
        """Keep connections open but silently drop all bytes, both directions.

        New connections are accepted and blackholed too.  Because dropped
        bytes leave a gap in the streams, connections that lost bytes are
        reset when the proxy leaves blackhole mode (as if they had timed out).
        """
        self._call(self._set_mode("blackhole"))

    def refuse(self, *, cut_existing: bool = True) -> None:
        """Stop listening, so connecting fails with "connection refused".

        With *cut_existing* (the default) open connections are reset too, as if
        the target process had died.  Selecting another mode listens again on
        the same port.
        """
        self._call(self._set_mode("refuse", cut_existing=cut_existing))

    def cut(self) -> None:
        """Reset (RST) every open connection; new connections are still accepted."""
        self._call(self._cut_all())

    def cut_after_request(self, match: bytes | None = None, *, linger: float = 1.0) -> None:
        """Arm a one-shot "response lost" fault and switch to pass-through.

        The next time client-to-target bytes containing *match* (any bytes if
        None) have been forwarded to the target, that connection's client side
        is reset as soon as the target sends anything back, so none of those
        bytes reach the client.  The target side stays open (its output
        discarded) for *linger* seconds so the request is fully processed, then
        it is closed.  Use :meth:`wait_cut` to wait for the fault to happen.
        """
        self._cut_event.clear()
        self._call(self._arm_cut(match, linger))

    def wait_cut(self, timeout: float) -> bool:
        """Wait until the armed :meth:`cut_after_request` fired; False on timeout."""
        return self._cut_event.wait(timeout)

    # -- loop-thread helpers -----------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("proxy is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("TcpProxy control methods cannot be called from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._listener = sock
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    def _stop_listening(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            self._accept_task = None
        if self._listener is not None:
            _close_socket(self._listener, reset=False)
            self._listener = None

    async def _shutdown(self) -> None:
        self._stop_listening()
        for conn in list(self._conns):
            conn.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _set_mode(self, mode: Mode, delay: float = 0.0, cut_existing: bool = True) -> None:
        previous = self._mode
        self._mode = mode
        self._delay = delay
        if previous == "blackhole" and mode != "blackhole":
            for conn in list(self._conns):
                if conn.poisoned:
                    conn.abort()
        if mode == "refuse":
            self._stop_listening()
            if cut_existing:
                await self._cut_all()
        elif self._listener is None:
            await self._listen()

    async def _cut_all(self) -> None:
        for conn in list(self._conns):
            conn.abort()

    async def _arm_cut(self, match: bytes | None, linger: float) -> None:
        await self._set_mode("pass")
        self._cut_match = match
        self._cut_linger = linger
        self._cut_armed = True

    # -- data path -----------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError:
                if self._listener is not listener:
                    return
                await asyncio.sleep(0.01)
                continue
            client.setblocking(False)
            self.connections += 1
            conn = _Conn(self, client)
            self._conns.add(conn)
            task = loop.create_task(self._serve(conn))
            conn.tasks.append(task)

    async def _serve(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        conn.upstream = upstream
        try:
            await asyncio.wait_for(
                loop.sock_connect(upstream, (self.target_host, self.target_port)),
                self.connect_timeout,
            )
        except (OSError, TimeoutError):
            conn.abort()  # target unreachable: the client sees a reset
            return
        if conn.closed:
            return
        for sock in (conn.client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_CHUNKS)
        down: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_CHUNKS)
        specs = [
            (self._reader(conn, conn.client, up), True),
            (self._writer(conn, upstream, up, upward=True), True),
            (self._reader(conn, upstream, down), False),
            (self._writer(conn, conn.client, down, upward=False), False),
        ]
        for coro, client_side in specs:
            task = loop.create_task(coro)
            conn.tasks.append(task)
            if client_side:
                conn.client_tasks.append(task)

    async def _reader(self, conn: _Conn, sock: socket.socket, queue: asyncio.Queue[Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(sock, _CHUNK)
                if not data:
                    await queue.put(_EOF)
                    return
                if self._mode == "blackhole":
                    conn.poisoned = True
                    continue
                release = time.monotonic() + (self._delay if self._mode == "delay" else 0.0)
                await queue.put((release, data))
        except OSError:
            # Reset by the peer: propagate the reset to the other side.
            if not conn.client_gone:
                conn.abort()

    async def _writer(
        self, conn: _Conn, sock: socket.socket, queue: asyncio.Queue[Any], *, upward: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await queue.get()
                if item is _EOF:
                    if not upward and conn.client_gone:
                        conn.close(reset=False)
                        return
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    conn.eofs += 1
                    if conn.eofs == 2:
                        conn.close(reset=False)
                    return
                release, data = item
                wait = release - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not upward and conn.client_gone:
                    continue  # cut_after_request: discard the target's output
                if not upward and conn.cut_pending:
                    self.cuts += 1
                    self._cut_event.set()
                    conn.abort_client_keep_upstream(self._cut_linger)
                    continue
                if self._mode == "blackhole":
                    conn.poisoned = True
                    continue
                # Count before sending, so a client that got the bytes sees them counted.
                if upward:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await loop.sock_sendall(sock, data)
                if upward:
                    self._check_cut(conn, data)
        except OSError:
            if not conn.client_gone:
                conn.abort()

    def _check_cut(self, conn: _Conn, data: bytes) -> None:
        if not self._cut_armed:
            return
        match = self._cut_match
        if match:
            window = conn.match_tail + data
            conn.match_tail = window[-(len(match) - 1) :] if len(match) > 1 else b""
            if match not in window:
                return
        self._cut_armed = False
        conn.cut_pending = True

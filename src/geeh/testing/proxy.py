"""A fault-injecting TCP proxy.

``TcpProxy(host, port)`` listens on 127.0.0.1 and forwards every accepted connection to
``host:port``. It runs its own asyncio event loop in a background thread, so a test can
switch its behaviour from any thread (or from its own event loop: the calls are quick)
while clients talk through it:

* :meth:`TcpProxy.pass_through` - forward bytes unchanged (the default);
* :meth:`TcpProxy.delay` - forward every chunk after a delay, both directions;
* :meth:`TcpProxy.blackhole` - keep connections open but drop every byte;
* :meth:`TcpProxy.block` - drop every byte of the connections from some sources only
  (a network partition), given a classifier that tells where a connection comes from;
* :meth:`TcpProxy.cut` - reset every open connection, keep accepting new ones;
* :meth:`TcpProxy.refuse` - stop listening (connection refused) until another mode is
  selected;
* :meth:`TcpProxy.cut_after_request` - one-shot: let a request through and reset the
  client connection before the response reaches it.

Every control method takes effect before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine, Hashable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from .relay import Classifier, Mode, ProxyState, Relay, close_socket

__all__ = ["Classifier", "Mode", "TcpProxy"]

_T = TypeVar("_T")


class TcpProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``target_host:target_port``.

    Args:
        target_host: where connections are forwarded.
        target_port: the target's port; may be changed later (``proxy.target_port = p``)
            and applies to new connections.
        listen_port: the port to listen on; 0 (the default) picks a free one.
        connect_timeout: how long a connection to the target may take.
        classify: tells where a connection comes from, from its first request's header
            block (bytes up to the blank line); :meth:`block` drops the connections of
            the sources it is given. Without it, :meth:`block` has nothing to act on.

    Counters (plain ints, readable from any thread): ``bytes_up`` (client to target,
    forwarded), ``bytes_down`` (target to client, delivered), ``connections`` (accepted
    so far), ``cuts`` (connections reset by :meth:`cut_after_request`).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_port: int = 0,
        connect_timeout: float = 5.0,
        classify: Classifier | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self._state = ProxyState(classify=classify)
        self._port = listen_port
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
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
        """The current mode: ``"pass"``, ``"delay"``, ``"blackhole"`` or ``"refuse"``."""
        return self._state.mode

    @property
    def blocked(self) -> frozenset[Hashable]:
        """The sources whose connections are dropped (see :meth:`block`)."""
        return self._state.blocked

    @property
    def active_connections(self) -> int:
        """Connections open right now."""
        return len(self._state.relays)

    @property
    def bytes_up(self) -> int:
        return self._state.bytes_up

    @property
    def bytes_down(self) -> int:
        return self._state.bytes_down

    @property
    def connections(self) -> int:
        return self._state.connections

    @property
    def cuts(self) -> int:
        return self._state.cuts

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> TcpProxy:
        """Bind the listening socket and start the proxy thread. Returns self."""
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
        """Reset all connections, stop listening and join the thread. Idempotent."""
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
            f"mode={self.mode} conns={self.active_connections}>"
        )

    # -- modes ---------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward bytes unchanged (and listen again after :meth:`refuse`).

        Blocked sources (:meth:`block`) stay blocked.
        """
        self._call(self._set_mode("pass"))

    def delay(self, seconds: float) -> None:
        """Forward each chunk *seconds* after it was received, in both directions."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._call(self._set_mode("delay", seconds))

    def blackhole(self) -> None:
        """Keep connections open but silently drop all bytes, both directions.

        New connections are accepted and blackholed too. Because dropped bytes leave a
        gap in the streams, connections that lost bytes are reset when the proxy leaves
        blackhole mode (as if they had timed out).
        """
        self._call(self._set_mode("blackhole"))

    def block(self, sources: Iterable[Hashable]) -> None:
        """Drop every byte, both ways, of the connections that come from *sources*.

        Where a connection comes from is what the proxy's ``classify`` said of it.
        Replaces the previous set; ``block(())`` lifts it, and resets the connections
        that lost bytes meanwhile. Connections of unknown source are never blocked.
        """
        self._call(self._block(frozenset(sources)))

    def refuse(self, *, cut_existing: bool = True) -> None:
        """Stop listening, so connecting fails with "connection refused".

        With *cut_existing* (the default) open connections are reset too, as if the
        target process had died. Selecting another mode listens again on the same port.
        """
        self._call(self._set_mode("refuse", cut_existing=cut_existing))

    def cut(self) -> None:
        """Reset (RST) every open connection; new connections are still accepted."""
        self._call(self._cut_all())

    def cut_after_request(
        self, match: bytes | None = None, *, linger: float = 1.0, then_refuse: bool = False
    ) -> None:
        """Arm a one-shot "response lost" fault and switch to pass-through.

        The next time client-to-target bytes containing *match* (any bytes if None)
        have been forwarded to the target, that connection's client side is reset as
        soon as the target sends anything back, so none of those bytes reach the
        client. The target side stays open (its output discarded) for *linger* seconds
        so the request is fully processed, then it is closed. Use :meth:`wait_cut` to
        wait for the fault to happen. With *then_refuse*, every connection made from the
        cut on is reset at once, as if refused, until another mode is set: a retry cannot
        slip through before the test reacts to the cut.
        """
        self._state.cut_event.clear()
        self._call(self._arm_cut(match, linger, then_refuse))

    def wait_cut(self, timeout: float) -> bool:
        """Wait until the armed :meth:`cut_after_request` fired; False on timeout."""
        return self._state.cut_event.wait(timeout)

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
            close_socket(self._listener, reset=False)
            self._listener = None

    async def _shutdown(self) -> None:
        self._stop_listening()
        await self._cut_all()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _set_mode(self, mode: Mode, delay: float = 0.0, cut_existing: bool = True) -> None:
        state = self._state
        previous = state.mode
        state.mode = mode
        state.delay = delay
        if previous == "blackhole" and mode != "blackhole":
            self._reset_poisoned()
        if mode == "refuse":
            self._stop_listening()
            if cut_existing:
                await self._cut_all()
        elif self._listener is None:
            await self._listen()

    async def _block(self, sources: frozenset[Hashable]) -> None:
        self._state.blocked = sources
        self._reset_poisoned()

    def _reset_poisoned(self) -> None:
        """Reset the connections that lost bytes and are no longer dropping."""
        for relay in list(self._state.relays):
            if relay.poisoned and not relay.dropping:
                relay.abort()

    async def _cut_all(self) -> None:
        for relay in list(self._state.relays):
            relay.abort()

    async def _arm_cut(self, match: bytes | None, linger: float, then_refuse: bool) -> None:
        await self._set_mode("pass")
        self._state.cut_match = match
        self._state.cut_linger = linger
        self._state.cut_then_refuse = then_refuse
        self._state.cut_armed = True

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
            if self._state.mode == "refuse":  # refused since a cut (then_refuse)
                client.setblocking(False)
                close_socket(client, reset=True)
                continue
            client.setblocking(False)
            self._state.connections += 1
            relay = Relay(self._state, client)
            self._state.relays.add(relay)
            task = loop.create_task(
                relay.serve((self.target_host, self.target_port), self.connect_timeout)
            )
            relay.tasks.append(task)

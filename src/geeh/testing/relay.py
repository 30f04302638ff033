"""The data path of :class:`~geeh.testing.proxy.TcpProxy`: one accepted connection relayed
to the target, in both directions, under the proxy's current fault settings."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["pass", "delay", "blackhole", "refuse"]
#: Tells where a connection comes from, given its first request's header block.
Classifier = Callable[[bytes], Hashable | None]

_CHUNK = 65536
_QUEUE_CHUNKS = 256
_HEADERS_MAX = 16384  # bytes looked at to classify a connection
_EOF = object()


@dataclass
class ProxyState:
    """What a proxy's relays read (fault settings) and update (counters).

    Owned by one TcpProxy and touched only on its event loop thread.
    """

    classify: Classifier | None = None
    mode: Mode = "pass"
    delay: float = 0.0
    blocked: frozenset[Hashable] = frozenset()
    cut_match: bytes | None = None
    cut_armed: bool = False
    cut_linger: float = 1.0
    cut_then_refuse: bool = False  # from the cut on, new connections are reset at once
    cut_event: threading.Event = field(default_factory=threading.Event)
    bytes_up: int = 0
    bytes_down: int = 0
    connections: int = 0
    cuts: int = 0
    relays: set[Relay] = field(default_factory=set)


def close_socket(sock: socket.socket, *, reset: bool) -> None:
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


class Relay:
    """One proxied connection: the client side and the upstream (target) side."""

    def __init__(self, state: ProxyState, client: socket.socket) -> None:
        self.state = state
        self.client = client
        self.upstream: socket.socket | None = None
        #: Where the connection comes from (the classifier's answer), None if unknown.
        self.source: Hashable | None = None
        self.tasks: list[asyncio.Task[None]] = []
        # Tasks that only deal with client input: cancelled when the client side is reset
        # by cut_after_request while the upstream side lingers.
        self.client_tasks: list[asyncio.Task[None]] = []
        self.poisoned = False  # bytes were dropped: the streams are no longer intact
        self.cut_pending = False  # cut_after_request matched on this connection
        self.client_gone = False
        self.closed = False
        self.match_tail = b""
        self.eofs = 0

    @property
    def dropping(self) -> bool:
        """True while every byte of this connection is to be dropped."""
        state = self.state
        return state.mode == "blackhole" or (
            self.source is not None and self.source in state.blocked
        )

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
                close_socket(sock, reset=reset)
        self.state.relays.discard(self)

    def abort(self) -> None:
        """Reset both sides now."""
        self.close(reset=True)

    def abort_client_keep_upstream(self, linger: float) -> None:
        """Reset the client side; drain and discard upstream for *linger* seconds."""
        if self.client_gone or self.closed:
            return
        self.client_gone = True
        self._cancel(self.client_tasks)
        close_socket(self.client, reset=True)
        asyncio.get_running_loop().call_later(linger, functools.partial(self.close, reset=False))

    async def serve(self, target: tuple[str, int], connect_timeout: float) -> None:
        """Connect to *target*, then start the four pumps (read and write, each way)."""
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        self.upstream = upstream
        try:
            await asyncio.wait_for(loop.sock_connect(upstream, target), connect_timeout)
        except (OSError, TimeoutError):
            self.abort()  # target unreachable: the client sees a reset
            return
        if self.closed:
            return
        for sock in (self.client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_CHUNKS)
        down: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_CHUNKS)
        specs = [
            (self._reader(self.client, up, classify=self.state.classify), True),
            (self._writer(upstream, up, upward=True), True),
            (self._reader(upstream, down, classify=None), False),
            (self._writer(self.client, down, upward=False), False),
        ]
        for coro, client_side in specs:
            task = loop.create_task(coro)
            self.tasks.append(task)
            if client_side:
                self.client_tasks.append(task)

    async def _reader(
        self, sock: socket.socket, queue: asyncio.Queue[Any], classify: Classifier | None
    ) -> None:
        loop = asyncio.get_running_loop()
        head = b""  # bytes held back until the connection is classified
        try:
            while True:
                data = await loop.sock_recv(sock, _CHUNK)
                eof = not data
                if classify is not None:
                    head += data
                    if not eof and b"\r\n\r\n" not in head and len(head) < _HEADERS_MAX:
                        continue
                    self.source = classify(head.split(b"\r\n\r\n", 1)[0])
                    classify, data, head = None, head, b""
                await self._forward(queue, data)
                if eof:
                    await queue.put(_EOF)
                    return
        except OSError:
            # Reset by the peer: propagate the reset to the other side.
            if not self.client_gone:
                self.abort()

    async def _forward(self, queue: asyncio.Queue[Any], data: bytes) -> None:
        if not data:
            return
        if self.dropping:
            self.poisoned = True
            return
        delay = self.state.delay if self.state.mode == "delay" else 0.0
        await queue.put((time.monotonic() + delay, data))

    async def _writer(
        self, sock: socket.socket, queue: asyncio.Queue[Any], *, upward: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        try:
            while True:
                item = await queue.get()
                if item is _EOF:
                    if not upward and self.client_gone:
                        self.close(reset=False)
                        return
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    self.eofs += 1
                    if self.eofs == 2:
                        self.close(reset=False)
                    return
                release, data = item
                wait = release - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not upward and self.client_gone:
                    continue  # cut_after_request: discard the target's output
                if not upward and self.cut_pending:
                    state.cuts += 1
                    if state.cut_then_refuse:
                        state.mode = "refuse"
                    state.cut_event.set()
                    self.abort_client_keep_upstream(state.cut_linger)
                    continue
                if self.dropping:
                    self.poisoned = True
                    continue
                # Count before sending, so a client that got the bytes sees them counted.
                if upward:
                    state.bytes_up += len(data)
                else:
                    state.bytes_down += len(data)
                await loop.sock_sendall(sock, data)
                if upward:
                    self._check_cut(data)
        except OSError:
            if not self.client_gone:
                self.abort()

    def _check_cut(self, data: bytes) -> None:
        state = self.state
        if not state.cut_armed:
            return
        match = state.cut_match
        if match:
            window = self.match_tail + data
            self.match_tail = window[-(len(match) - 1) :] if len(match) > 1 else b""
            if match not in window:
                return
        state.cut_armed = False
        self.cut_pending = True

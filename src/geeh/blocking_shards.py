"""Sharded leadership from blocking code: each shard's work on a thread of its own.

::

    queue = geeh.ActiveCompletionQueue()
    client = queue.client(["127.0.0.1:2379"])
    shards = geeh.ShardedElection(queue, client, "jobs", count=64, value="worker-7", ttl=10)
    shards.run(work)     # work(shard, leadership, stop) for each shard this process leads
    ...
    shards.close()       # hands every shard over, then returns

A thread cannot be cancelled: ``stop`` (a threading.Event) is set when the shard leaves, and
``work`` must return soon after; nothing else happens to that shard until it has.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from .client import Client
from .completion_queue import ActiveCompletionQueue
from .election import DEFAULT_TTL
from .errors import ClosedError, InvalidArgument
from .keys import to_bytes
from .leadership import Leadership
from .session import check_ttl

ThreadWork = Callable[[int, Leadership, threading.Event], Any]


class ShardedElection:
    """:meth:`geeh.Shards.run` for blocking code; ``client`` comes from ``queue.client()``."""

    def __init__(
        self,
        queue: ActiveCompletionQueue,
        client: Client,
        name: str | bytes,
        count: int,
        value: str | bytes,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        if not isinstance(queue, ActiveCompletionQueue):
            raise InvalidArgument(
                f"queue must be an ActiveCompletionQueue, not {type(queue).__name__}"
            )
        if not isinstance(client, Client):
            raise InvalidArgument(f"client must be a geeh.Client, not {type(client).__name__}")
        self._queue = queue
        self._value = to_bytes(value, "value")
        self._ttl = check_ttl(ttl)
        self.shards = client.shards(name, count)
        self._task: asyncio.Task[None] | None = None
        self._future: concurrent.futures.Future[None] | None = None

    def run(self, work: ThreadWork) -> concurrent.futures.Future[None]:
        """Start: ``work(shard, leadership, stop)`` on a thread per shard led, until close()."""
        if not callable(work):
            raise InvalidArgument(f"work must be callable, not {type(work).__name__}")
        if self._future is not None:
            raise ClosedError("this sharded election already ran")

        async def on_thread(shard: int, leadership: Leadership) -> None:
            loop = asyncio.get_running_loop()
            stop = threading.Event()
            done: asyncio.Future[None] = loop.create_future()

            def target() -> None:
                try:
                    work(shard, leadership, stop)
                finally:
                    loop.call_soon_threadsafe(done.set_result, None)

            threading.Thread(target=target, name=f"geeh-shard-{shard}", daemon=True).start()
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                stop.set()
                await asyncio.wait({done})  # a thread cannot be cancelled: it must return
                raise

        async def main() -> None:
            self._task = asyncio.current_task()
            await self.shards.run(on_thread, self._value, ttl=self._ttl)

        self._future = self._queue.submit(main())
        return self._future

    def close(self, timeout: float | None = None) -> None:
        """Leave: hand every shard over, stop every thread, return. Idempotent."""

        async def leave() -> None:
            task = self._task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})

        if self._future is not None and not self._queue.forked:
            self._queue.call(leave(), timeout)

"""Observing an election from blocking code: the C++ gee-h's ``watch_election``.

:func:`watch_election` returns an :class:`ElectionObserver`, which follows the election on the
queue's event loop and calls each subscriber with the leader's key and value (str, see
blocking_text.py) on a thread of its own, so that a slow callback never stalls the loop.
Re-exported by :mod:`geeh.blocking`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from .blocking_text import raw, text
from .completion_queue import ActiveCompletionQueue, Endpoints
from .errors import ClosedError, InvalidArgument
from .leader import Leader
from .observe import Observation

log = logging.getLogger("geeh.blocking")

__all__ = ["ElectionObserver", "Subscription", "watch_election"]


class Subscription:
    """Returned by :meth:`ElectionObserver.subscribe`; ``unsubscribe()`` ends the callbacks."""

    def __init__(self, observer: ElectionObserver, callback: Callable[[str, str], Any]) -> None:
        self._observer = observer
        self.callback = callback

    def unsubscribe(self) -> None:
        """Stop calling the callback. Idempotent."""
        self._observer._subscribers.pop(id(self), None)


class ElectionObserver:
    """Watch an election from blocking code (the C++ ``gh::watch_election``).

    ``subscribe(callback)`` calls ``callback(key, value)`` for the current leader and every
    change after it; ``key == ""`` means "no current leader". Both are str, decoded so that no
    byte is lost (see the module's docstring). Callbacks run in order on the observer's own
    thread; one that raises is logged and the others go on.
    """

    def __init__(
        self, queue: ActiveCompletionQueue, endpoints_or_client: Endpoints, name: str | bytes
    ) -> None:
        name = raw(name, "election name")
        self._queue = queue
        self._client, self._owns_client = queue._resolve(endpoints_or_client)
        self._election = self._client.election(name)
        self._subscribers: dict[int, Subscription] = {}
        self._known = False
        self._leader: Leader | None = None
        self._callbacks = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="geeh-callbacks"
        )
        self._closed = False
        self._future = queue.submit(self._run())
        self._future.add_done_callback(self._ended)
        queue._own(self)

    def _ended(self, future: concurrent.futures.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("election observer stopped: %s", future.exception())

    @property
    def leader(self) -> Leader | None:
        """The last leader reported (None for none, or before the first report)."""
        return self._leader

    async def _run(self) -> None:
        observation: Observation = self._election.observe()
        async with observation:
            async for leader in observation:
                self._leader = leader
                self._known = True
                for subscription in list(self._subscribers.values()):
                    self._dispatch(subscription, leader)

    def _dispatch(self, subscription: Subscription, leader: Leader | None) -> None:
        with contextlib.suppress(RuntimeError):  # executor shut down: observer closing
            self._callbacks.submit(self._deliver, subscription, leader)

    def _deliver(self, subscription: Subscription, leader: Leader | None) -> None:
        if id(subscription) not in self._subscribers:
            return
        key, value = (text(leader.key), text(leader.value)) if leader is not None else ("", "")
        try:
            subscription.callback(key, value)
        except Exception:
            log.exception("election observer callback %r raised", subscription.callback)

    def subscribe(self, callback: Callable[[str, str], Any]) -> Subscription:
        """Call ``callback(key, value)`` for the current leader and each change after it."""
        if not callable(callback):
            raise InvalidArgument(f"callback must be callable, not {type(callback).__name__}")
        self._queue.check_fork()
        if self._closed:
            raise ClosedError("this observer was closed")
        subscription = Subscription(self, callback)

        def add() -> None:
            self._subscribers[id(subscription)] = subscription
            if self._known:
                self._dispatch(subscription, self._leader)

        self._queue.loop.call_soon_threadsafe(add)
        return subscription

    def close(self) -> None:
        """Stop observing and calling back; close the client if this observer made it."""
        if self._closed:
            return
        self._closed = True
        self._subscribers.clear()
        if self._queue.forked:
            return  # the parent's: its loop, thread and channels are not ours to stop
        self._future.cancel()
        if self._owns_client:
            with contextlib.suppress(Exception):
                self._queue.call(self._client.close(), timeout=10)
        on_callback_thread = threading.current_thread().name.startswith("geeh-callbacks")
        self._callbacks.shutdown(wait=not on_callback_thread, cancel_futures=True)


def watch_election(
    queue: ActiveCompletionQueue, endpoints_or_client: Endpoints, name: str | bytes
) -> ElectionObserver:
    """Observe election ``name`` (the C++ ``gh::watch_election``); see ElectionObserver."""
    if not isinstance(queue, ActiveCompletionQueue):
        raise InvalidArgument(f"queue must be an ActiveCompletionQueue, not {type(queue).__name__}")
    return ElectionObserver(queue, endpoints_or_client, name)

"""The blocking API: the C++ gee-h's classes, for code that does not use asyncio.

An :class:`ActiveCompletionQueue` owns a background thread that runs an asyncio event loop;
:class:`LeaderElection` and :func:`watch_election` run the asyncio core on it and hand back
``concurrent.futures.Future`` objects and callbacks. Callbacks run on a thread of their own
per observer, so a slow callback never stalls the event loop.

Text, as in the C++ gee-h: keys and values are ``str`` here (the asyncio API uses bytes),
decoded so that no byte is lost (see blocking_text.py). Arguments may be ``str`` or
``bytes``. The observer (:class:`ElectionObserver`, :func:`watch_election`) lives in
blocking_observe.py and is re-exported here.

A blocking call given a ``timeout`` that passes raises :class:`~geeh.Timeout` (a
``TimeoutError``) after cancelling the operation; one made on the queue's own thread (in a
callback that runs on the loop) raises :class:`~geeh.WrongThread` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import kv
from .blocking_observe import ElectionObserver, Subscription, watch_election
from .blocking_text import raw, text
from .completion_queue import ActiveCompletionQueue, Endpoints
from .election import DEFAULT_TTL, Election
from .errors import ClosedError, InvalidArgument, NotLeader, Timeout
from .leadership import Leadership
from .session import check_ttl

__all__ = [
    "ActiveCompletionQueue",
    "ElectionObserver",
    "LeaderElection",
    "Subscription",
    "watch_election",
]


def _seconds(ttl: float | datetime.timedelta) -> int:
    if isinstance(ttl, datetime.timedelta):
        ttl = ttl.total_seconds()
    return check_ttl(ttl)


class LeaderElection:
    """Join an election from blocking code (the C++ ``gh::leader_election``).

    ::

        election = geeh.LeaderElection(queue, ["127.0.0.1:2379"], "my-election", "my-value", ttl=5)
        elected = election.campaign().result()   # True once elected
        election.proclaim("v2")
        election.resign()

    ``key`` and ``value`` are str (see the module's docstring for bytes that are not UTF-8).
    """

    def __init__(
        self,
        queue: ActiveCompletionQueue,
        endpoints_or_client: Endpoints,
        name: str | bytes,
        value: str | bytes,
        ttl: float | datetime.timedelta = DEFAULT_TTL,
    ) -> None:
        if not isinstance(queue, ActiveCompletionQueue):
            raise InvalidArgument(
                f"queue must be an ActiveCompletionQueue, not {type(queue).__name__}"
            )
        self._queue = queue
        self._value = raw(value, "value")
        self._ttl = _seconds(ttl)
        name = raw(name, "election name")
        self._client, self._owns_client = queue._resolve(endpoints_or_client)
        self._election: Election = self._client.election(name)
        self._future: concurrent.futures.Future[bool] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._leadership: Leadership | None = None
        self._withdrawn = False
        self._closed = False
        queue._own(self)

    def campaign(self) -> concurrent.futures.Future[bool]:
        """Start campaigning; the Future is True once elected, False if withdrawn first.

        It fails with an :class:`~geeh.ElectionError` if the candidate's key or lease is lost
        while waiting. Calling again returns the same Future while the campaign runs or
        leads; after leadership ended, it starts a new campaign.
        """
        self._queue.check_fork()
        if self._closed:
            raise ClosedError("this election was closed")
        previous = self._future
        if previous is None or (previous.done() and not self.elected):
            self._withdrawn = False
            self._leadership = None
            previous = self._future = self._queue.submit(self._campaign())
        return previous

    async def _campaign(self) -> bool:
        self._task = asyncio.current_task()
        try:
            self._leadership = await self._election.campaign(self._value, ttl=self._ttl)
        except asyncio.CancelledError:
            if self._withdrawn:
                return False
            raise
        return True

    @property
    def elected(self) -> bool:
        """True while this candidate leads; cleared as soon as leadership is lost.

        Read on the caller's thread, without waiting for the loop: past the session's
        deadline it is False at once, even while the loop is busy.
        """
        self._queue.check_fork()  # a forked child's copy of the term is the parent's
        leadership = self._leadership
        return leadership is not None and leadership.is_leader

    @property
    def key(self) -> str:
        """Our candidate key once elected, else "" (str: see the module's docstring)."""
        return text(self._leadership.key) if self._leadership else ""

    @property
    def token(self) -> int:
        """The fencing token (our key's create revision) once elected, else 0."""
        return self._leadership.token if self._leadership else 0

    @property
    def value(self) -> str:
        """Our value: the last one proclaimed, else the one we campaign with."""
        return text(self._leadership.value if self._leadership else self._value)

    @property
    def leadership(self) -> Leadership | None:
        """The asyncio Leadership object, once elected."""
        return self._leadership

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until leadership ends (True) or ``timeout`` passes (False)."""
        leadership = self._leadership
        if leadership is None:
            raise NotLeader("not elected")
        try:
            self._queue.call(leadership.lost.wait(), timeout)
        except Timeout:
            return False
        return True

    def on_lost(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(reason)`` (on the loop thread: keep it quick) when leadership ends."""
        self._queue.check_fork()
        leadership = self._leadership
        if leadership is None:
            raise NotLeader("not elected")
        self._queue.loop.call_soon_threadsafe(leadership.lost.add_callback, callback)

    def proclaim(self, value: str | bytes, timeout: float | None = None) -> None:
        """Publish a new value; raises NotLeader if we do not lead."""
        data = raw(value, "value")
        if self._leadership is None:
            raise NotLeader("not elected")
        self._queue.call(self._leadership.proclaim(data), timeout)

    # -- fenced writes and the supervisor: see Leadership and Election.run -------------------

    def _leading(self) -> Leadership:
        if self._leadership is None:
            raise NotLeader("not elected")
        return self._leadership

    def put(self, key: str | bytes, value: str | bytes, timeout: float | None = None) -> int:
        """Write ``value`` to ``key`` only while we lead (fenced); returns the revision.

        Raises NotLeader, writing nothing, once leadership has moved on.
        """
        leadership = self._leading()
        return self._queue.call(leadership.put(raw(key, "key"), raw(value, "value")), timeout)

    def delete(
        self, key: str | bytes, *, prefix: bool = False, timeout: float | None = None
    ) -> int:
        """Delete ``key`` (or every key under it) only while we lead; returns the revision."""
        leadership = self._leading()
        return self._queue.call(leadership.delete(raw(key, "key"), prefix=prefix), timeout)

    def txn(
        self,
        compares: Sequence[kv.Compare],
        success: Sequence[kv.Op],
        failure: Sequence[kv.Op] = (),
        timeout: float | None = None,
    ) -> kv.TxnResult:
        """A Txn (see :mod:`geeh.kv`) that runs only while we lead, else NotLeader."""
        return self._queue.call(self._leading().txn(compares, success, failure), timeout)

    def run(
        self,
        work: Callable[[threading.Event], Any],
        *,
        again: bool = True,
        grace: float | None = None,
        on_elected: Callable[[Leadership], object] | None = None,
        on_lost: Callable[[Leadership, BaseException | None], object] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Run ``work(stop)`` on a thread only while leader, campaigning again after each loss.

        A thread cannot be cancelled: ``stop`` (a threading.Event) is set when leadership
        ends, and ``work`` must return soon after (within ``grace``; see Election.run for the
        bound). Nothing else happens until it has returned: no resign, no new campaign (a
        :meth:`resign` whose ``timeout`` passes first raises Timeout and leaves the resign
        to the run). While it runs, :attr:`elected`, :attr:`token` and the fenced
        :meth:`put`/:meth:`txn` work as after a campaign. The Future completes when the run
        stops (``again=False``: with work's result); cancel it, :meth:`resign` or
        :meth:`close` to stop. The callbacks run on the loop's thread (an ``async def`` one
        is awaited there, as in Election.run).
        """
        if self._closed:
            raise ClosedError("this election was closed")
        if not callable(work):
            raise InvalidArgument(f"work must be callable, not {type(work).__name__}")

        async def in_thread(leadership: Leadership) -> Any:
            self._leadership = leadership
            stop = threading.Event()
            thread = asyncio.get_running_loop().run_in_executor(None, work, stop)
            try:
                return await asyncio.shield(thread)
            except asyncio.CancelledError:
                stop.set()
                # A thread cannot be cancelled: wait until it returns, even if cancelled
                # again meanwhile, so that nothing resigns while the work still runs.
                while not thread.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait({thread})
                error = thread.exception()
                if error is not None:
                    raise error from None  # the supervisor logs it: raised while stopping
                raise

        async def supervise() -> Any:
            self._task = asyncio.current_task()
            return await self._election.run(
                in_thread,
                self._value,
                ttl=self._ttl,
                again=again,
                grace=grace,
                on_elected=on_elected,
                on_lost=on_lost,
            )

        return self._queue.submit(supervise())

    def resign(self, timeout: float | None = None) -> None:
        """Stop campaigning or give up leadership. Idempotent; retry if it raised.

        After :meth:`run`, this first stops the work (sets its ``stop``) and waits for it to
        return: leadership is kept until then. If ``timeout`` passes first,
        :class:`~geeh.Timeout` is raised, the work still stops, and the run resigns as soon
        as it has returned.
        """
        self._queue.call(self._resign(), timeout)

    async def _resign(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self._withdrawn = True
            task.cancel()
            # Not "await task": our own cancellation (the timeout) must end this wait, not
            # be taken for the task's, or we would resign while the work still runs.
            await asyncio.wait({task})
        if self._leadership is not None:
            await self._leadership.resign()
        self._future = None

    def close(self) -> None:
        """Resign and close the client if this election made it. Idempotent.

        In a process forked after the queue was made it only marks itself closed: its
        candidate belongs to the parent (see :class:`~geeh.ForkedError`).
        """
        if self._closed:
            return
        self._closed = True
        if self._queue.forked:
            return
        with contextlib.suppress(Exception):
            self.resign(timeout=10)
        if self._owns_client:
            with contextlib.suppress(Exception):
                self._queue.call(self._client.close(), timeout=10)

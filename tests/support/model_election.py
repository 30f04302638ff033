"""A scripted election at the supervisor's boundary, for model-based tests of Election.run.

The supervisor needs only ``campaign(value, ttl=...)`` and, of the Leadership it returns,
``name``, ``session.ttl``, ``lost`` (a real LossSignal), ``is_leader`` and ``resign()``.
This fake gives exactly that, driven step by step by the test: it decides when a waiting
campaign wins, fails (expiry, key deleted, etcd unavailable) or stays in line, and when a
leadership is lost (expiry, key deleted, lease revoked) or the client closes. ``keys`` is
the store: the candidate keys we hold, as etcd would show them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from geeh.errors import CandidateRemoved, ClosedError, EtcdUnavailable, SessionExpired
from geeh.loss import LossSignal
from geeh.net.retry import Backoff
from geeh.supervisor import Supervisor

LOSSES = {
    "expiry": lambda: SessionExpired("the session's local deadline passed"),
    "deleted": lambda: CandidateRemoved("candidate key deleted"),
    "revoked": lambda: SessionExpired("lease revoked"),
}


class FakeLeadership:
    """What the supervisor sees of a won campaign."""

    def __init__(self, model: ModelElection, token: int) -> None:
        self.model = model
        self.name = b"model"
        self.key = f"model/{token:x}".encode()
        self.token = token
        self.session = SimpleNamespace(ttl=1)
        self.lost = LossSignal()
        self.resigns = 0
        self.resigned = False

    @property
    def is_leader(self) -> bool:
        return not self.lost.is_set()

    def lose(self, reason: BaseException | None) -> None:
        """The leadership ends: etcd (or the clean-up after a loss) removes our key."""
        self.lost.set(reason)
        self.model.keys.discard(self.token)

    async def resign(self, *, timeout: float | None = None) -> None:
        if self.resigned:
            return
        self.resigns += 1
        if self.is_leader:
            self.model.on_resign(self)
        self.lost.set(None)
        try:
            await asyncio.sleep(0)  # a network hop
        finally:
            # Failed or cancelled, the real Leadership removes the key in the background
            # (or etcd expires it): the supervisor's part was to ask.
            self.model.keys.discard(self.token)
        if self.model.outage:
            raise EtcdUnavailable("etcd unavailable (scripted outage)")
        self.resigned = True


@dataclass
class Waiting:
    """A campaign in line; the test resolves it with ``win`` or ``fail``."""

    token: int
    turn: asyncio.Future[BaseException | None]


class ModelElection:
    """The election: one candidate of ours at a time, plus a rival that may hold the lead."""

    def __init__(self) -> None:
        self.keys: set[int] = set()  # tokens of our candidate keys in the store
        self.next_token = 1
        self.outage = False
        self.closed = False
        self.waiting: Waiting | None = None
        self.leadership: FakeLeadership | None = None  # the newest one won
        self.campaigns = 0
        self.free = False  # the next campaign wins at once (no rival ahead)
        # Called as a leader resigns (the test checks that no work runs then).
        self.on_resign: Callable[[FakeLeadership], None] = lambda _: None

    async def campaign(self, value: bytes, *, ttl: int) -> FakeLeadership:
        self.campaigns += 1
        await asyncio.sleep(0)  # a network hop
        if self.closed:
            raise ClosedError("the client was closed")
        if self.outage:
            raise EtcdUnavailable("etcd unavailable (scripted outage)")
        token, self.next_token = self.next_token, self.next_token + 1
        self.keys.add(token)
        waiting = self.waiting = Waiting(token, asyncio.get_running_loop().create_future())
        if self.free:
            self.free = False
            waiting.turn.set_result(None)
        try:
            failure = await waiting.turn
        except BaseException:  # cancelled: the campaign withdraws its key
            self.keys.discard(token)
            raise
        finally:
            self.waiting = None
        if failure is not None:
            self.keys.discard(token)
            raise failure
        leadership = self.leadership = FakeLeadership(self, token)
        return leadership

    async def run(self, work: Any, value: bytes, **options: Any) -> Any:
        """What Election.run does, over this election (short pauses between campaigns)."""
        backoff = Backoff(base=0.001, cap=0.01)
        return await Supervisor(self, work, value, backoff=backoff, **options).run()  # type: ignore[arg-type]

    def win(self) -> None:
        """The rival ahead of us leaves: a campaign in line wins, else the next one will."""
        if self.waiting is not None and not self.waiting.turn.done():
            self.waiting.turn.set_result(None)
        else:
            self.free = True

    def fail(self, error: BaseException) -> None:
        if self.waiting is not None and not self.waiting.turn.done():
            self.waiting.turn.set_result(error)

    def close(self) -> None:
        """The client closes: a waiting campaign fails, a leader resigns (reason None)."""
        self.closed = True
        self.fail(ClosedError("the client was closed"))
        if self.leadership is not None and self.leadership.is_leader:
            self.leadership.lose(None)

    def leading(self, leadership: object) -> bool:
        """Whether ``leadership`` is the store's leader right now."""
        return (
            isinstance(leadership, FakeLeadership)
            and leadership.is_leader
            and leadership.token in self.keys
            and leadership is self.leadership
        )

"""A model-based test of the supervisor (Election.run), over a scripted election.

Seeded random schedules interleave, step by step: wins, losses (expiry, key deleted, lease
revoked; in line or leading), etcd outages, the caller's cancellation and the client's close,
with every way work can end (it returns, raises, is cancelled by other code, honours
cancellation, or ignores it for a while) and every kind of callback (sync, raising, slow,
async, async raising, async slow, one during which the lease runs out). After every step
and at the end, the invariants:

  (a) work never starts while we do not lead;
  (b) after a loss, work that honours cancellation has ended at once (within a few loop
      steps: long before any grace);
  (c) when run() returns or raises, no work task of it runs and no key of it is left; and
      it never resigns while its work runs;
  (d) with again=True, run() ends only on cancellation or close, and it raises
      CancelledError only if it was cancelled;
  (e) each async callback is awaited, and each term's on_elected has its on_lost.

Each schedule is a seed: a failure names it, and ``run_schedule(seed, again)`` replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.model_election import LOSSES, FakeLeadership, ModelElection

from geeh.errors import (
    CandidateRemoved,
    ElectionError,
    EtcdUnavailable,
    InvalidArgument,
    SessionExpired,
)
from geeh.net.retry import Backoff
from geeh.supervisor import Supervisor

SCHEDULES = 300
WORKS = ("returns", "raises", "self_cancel", "honours", "stubborn", "stubborn_returns")
CALLBACKS = (None, "sync", "sync_raises", "async", "async_raises", "async_slow", "async_ticks")
ELECTED_ONLY = ("sync_deadline", "async_deadline")  # the lease runs out during on_elected
# Weighted for many terms per schedule. The end (cancel, close) comes at a random step, and
# the schedule goes on after it (a loss may come while run() stops its work).
ACTIONS = ("win",) * 4 + ("tick",) * 2 + ("lose",) * 3 + ("outage",)
STEP_TICKS = 8  # loop steps after each action: enough for a cancellation to be delivered


async def ticks(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@dataclass
class Term:
    leadership: FakeLeadership
    behaviour: str
    task: asyncio.Task[Any]
    ended: bool = False


@dataclass
class Schedule:
    seed: int
    again: bool
    rng: random.Random
    model: ModelElection = field(default_factory=ModelElection)
    terms: list[Term] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    elected: list[FakeLeadership] = field(default_factory=list)
    lost: list[FakeLeadership] = field(default_factory=list)
    async_called: int = 0
    async_awaited: int = 0
    cancelled: bool = False
    closed: bool = False
    both_callbacks: bool = False
    outage_steps: int = 0
    slow: int = 0  # slow callbacks running: each holds up the schedule (a step in real time)

    def violate(self, what: str) -> None:
        self.violations.append(f"seed {self.seed} again={self.again}: {what}")

    # -- the work ------------------------------------------------------------------------

    async def work(self, leadership: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        term = Term(leadership, self.rng.choice(WORKS), task)
        self.terms.append(term)
        if not self.model.leading(leadership):
            self.violate(f"(a) work started while not leader ({leadership.lost.reason!r})")
        k = self.rng.randint(0, 6)
        try:
            return await self._behave(term, k)
        finally:
            term.ended = True

    async def _behave(self, term: Term, k: int) -> Any:
        if term.behaviour == "returns":
            await ticks(k)
            return term.leadership.token
        if term.behaviour == "raises":
            await ticks(k)
            raise RuntimeError("work failed")
        if term.behaviour == "self_cancel":  # awaits something that other code cancels
            await ticks(k)
            other = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(other.cancel)
            await other
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if term.behaviour == "honours":
                raise
            for _ in range(k * STEP_TICKS):  # ignores cancellation, over several steps
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            if term.behaviour == "stubborn_returns":
                return "ignored the cancellation"
            raise
        raise AssertionError("unreachable")

    # -- the callbacks -------------------------------------------------------------------

    def callback(self, kind: str | None, elected: bool) -> Callable[..., Any] | None:
        if kind is None:
            return None

        def sync(leadership: FakeLeadership, *_: Any) -> None:
            (self.elected if elected else self.lost).append(leadership)
            if kind == "sync_raises":
                raise ValueError("callback bug")
            if kind == "sync_deadline":  # a slow callback: the lease ran out meanwhile
                leadership.lose(SessionExpired("the session's local deadline passed"))

        async def asynchronous(leadership: FakeLeadership, *_: Any) -> None:
            self.async_awaited += 1
            if kind == "async_raises":
                raise ValueError("async callback bug")
            if kind == "async_slow":  # cancelled after the callback timeout
                self.slow += 1
                try:
                    await asyncio.sleep(10)
                finally:
                    self.slow -= 1
            if kind in ("async_ticks", "async_deadline"):
                await ticks(self.rng.randint(1, 12))
            if kind == "async_deadline":
                leadership.lose(SessionExpired("the session's local deadline passed"))

        def start_async(leadership: FakeLeadership, *args: Any) -> Any:
            (self.elected if elected else self.lost).append(leadership)
            self.async_called += 1
            return asynchronous(leadership, *args)

        return start_async if kind.startswith("async") else sync

    # -- the schedule --------------------------------------------------------------------

    def act(self, action: str, run: asyncio.Future[Any]) -> None:
        model = self.model
        if action == "win":
            model.win()
        elif action == "lose":
            kind = self.rng.choice(sorted(LOSSES))
            leadership = model.leadership
            if leadership is not None and leadership.is_leader:
                leadership.lose(LOSSES[kind]())
            elif self.rng.random() < 0.3:  # in line: fails the campaign
                if kind == "deleted":
                    model.fail(CandidateRemoved("candidate key deleted while waiting"))
                else:
                    model.fail(SessionExpired("session expired while waiting"))
        elif action == "outage":  # for a few steps
            model.outage = True
            self.outage_steps = self.rng.randint(1, 3)
            model.fail(EtcdUnavailable("etcd unavailable (scripted outage)"))
        elif action == "cancel" and not self.cancelled:
            self.cancelled = True
            run.cancel()
        elif action == "close" and not self.closed:
            self.closed = True
            model.close()

    def step(self) -> None:
        if self.outage_steps:
            self.outage_steps -= 1
            self.model.outage = self.outage_steps > 0

    def check_resign(self, leadership: FakeLeadership) -> None:
        running = [t.behaviour for t in self.terms if not t.task.done()]
        if running:
            self.violate(f"(c) resigned while work runs: {running}")

    def check_running(self) -> None:
        for term in self.terms:
            lost = term.leadership.lost
            honours = term.behaviour not in ("stubborn", "stubborn_returns")
            if lost.is_set() and lost.reason is not None and honours and not term.ended:
                self.violate(f"(b) {term.behaviour} work still runs after a loss")

    def check_end(self, run: asyncio.Future[Any]) -> None:
        running = [t.behaviour for t in self.terms if not t.task.done()]
        if running:
            self.violate(f"(c) run() ended while work runs: {running}")
        if self.model.keys:
            self.violate(f"(c) run() ended leaving keys {sorted(self.model.keys)}")
        if run.cancelled():
            if not self.cancelled:
                self.violate("(d) run() raised CancelledError but was not cancelled")
            outcome: Any = "cancelled"
        elif run.exception() is not None:
            outcome = run.exception()
        else:
            outcome = run.result()
        if self.again and not (self.cancelled or self.closed):
            self.violate(f"(d) again=True, but run() ended with {outcome!r}")
        if not self.again and not run.cancelled():
            # again=False: work's result or error, None, or the error of a failed campaign
            expected = isinstance(outcome, RuntimeError | ElectionError | EtcdUnavailable)
            expected = expected or outcome is None
            expected = expected or isinstance(outcome, int) or outcome == "ignored the cancellation"
            if not expected:
                self.violate(f"again=False: run() ended with {outcome!r}")
        if self.async_awaited != self.async_called:
            self.violate(f"(e) {self.async_called} async callbacks, {self.async_awaited} awaited")
        if self.both_callbacks and len(self.lost) != len(self.elected):
            self.violate(f"(e) {len(self.elected)} on_elected, {len(self.lost)} on_lost")


async def run_schedule(seed: int, again: bool) -> list[str]:
    rng = random.Random(seed)
    s = Schedule(seed, again, rng)
    s.model.on_resign = s.check_resign
    on_elected = s.callback(rng.choice(CALLBACKS + ELECTED_ONLY), elected=True)
    on_lost_kind = rng.choice(CALLBACKS)
    on_lost = s.callback(on_lost_kind, elected=False)
    supervisor = Supervisor(
        s.model,  # type: ignore[arg-type]
        s.work,
        b"v",
        ttl=1,
        again=again,
        grace=1.0,
        on_elected=on_elected,
        on_lost=on_lost,
        backoff=Backoff(base=0.0, cap=0.0),
    )
    supervisor.callback_timeout = 0.01
    if on_elected is not None and on_lost is None:  # count on_lost too, quietly
        supervisor.on_lost = s.callback("sync", elected=False)
    s.both_callbacks = supervisor.on_elected is not None
    run = asyncio.ensure_future(supervisor.run())
    steps = rng.randint(3, 40)
    end = rng.randint(0, steps + steps // 2)  # past the steps: cancel or close after them
    for step in range(steps):
        if run.done():
            break
        s.act(rng.choice(("cancel", "close")) if step == end else rng.choice(ACTIONS), run)
        await ticks(STEP_TICKS)
        while s.slow and not run.done():
            await asyncio.wait({run}, timeout=0.002)
        s.step()
        s.check_running()
    if not run.done():
        s.act(rng.choice(("cancel", "close")), run)
    # The end: the model keeps answering (a waiting campaign wins) until run() is over.
    for _ in range(2000):
        if run.done():
            break
        s.model.win()
        await asyncio.wait({run}, timeout=0.001)
        s.check_running()
    if not run.done():
        s.violate("run() did not end after cancel or close")
        run.cancel()
        await asyncio.wait({run}, timeout=1)
    s.check_end(run)
    for term in s.terms:  # nothing left behind by the test either
        term.task.cancel()
    return s.violations


async def test_supervisor_schedules_keep_the_invariants(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="geeh")  # the schedules log many errors by design
    violations: list[str] = []
    for seed in range(SCHEDULES):
        violations += await run_schedule(seed, again=seed % 3 != 0)
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations[:20])


async def test_a_loss_between_the_check_and_the_first_step_never_starts_work() -> None:
    """A pinned ordering: the loss lands after the check, before the work's first step."""
    model = ModelElection()
    started: list[bool] = []
    elected: list[FakeLeadership] = []

    def on_elected(leadership: FakeLeadership) -> None:
        elected.append(leadership)
        if len(elected) == 1:  # first term: lost as the work is about to start
            expiry = SessionExpired("the session's local deadline passed")
            asyncio.get_running_loop().call_soon(leadership.lose, expiry)

    async def work(leadership: Any) -> None:
        started.append(leadership.is_leader)

    supervisor = Supervisor(
        model,  # type: ignore[arg-type]
        work,
        b"v",
        ttl=1,
        again=False,
        grace=1.0,
        on_elected=on_elected,
        on_lost=None,
        backoff=Backoff(base=0.0, cap=0.0),
    )
    model.free = True
    run = asyncio.ensure_future(supervisor.run())
    while not started and not run.done():
        model.win()
        await asyncio.sleep(0)
    await run
    assert started == [True], "the work ran once, in the second term, as leader"
    assert model.campaigns == 2


async def test_a_callback_that_is_not_callable_is_refused_in_one_line() -> None:
    async def work(leadership: Any) -> None:
        pass

    with pytest.raises(InvalidArgument, match="on_lost must be callable, not str"):
        Supervisor(
            ModelElection(),  # type: ignore[arg-type]
            work,
            b"v",
            ttl=1,
            again=True,
            grace=None,
            on_elected=None,
            on_lost="log it",  # type: ignore[arg-type]
        )


async def test_a_bad_ttl_is_refused_in_one_line_before_any_campaign() -> None:
    async def work(leadership: Any) -> None:
        pass

    model = ModelElection()
    with pytest.raises(InvalidArgument, match="ttl must be a number of seconds, not NoneType"):
        Supervisor(
            model,  # type: ignore[arg-type]
            work,
            b"v",
            ttl=None,  # type: ignore[arg-type]
            again=True,
            grace=None,
            on_elected=None,
            on_lost=None,
        )
    assert model.campaigns == 0

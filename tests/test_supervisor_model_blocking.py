"""The model-based test of the supervisor, through the blocking facade (LeaderElection.run).

A smaller set of seeded schedules than the asyncio one (test_supervisor_model.py): the work
is a thread that returns, raises, honours ``stop`` or ignores it until released, while the
schedule wins, loses (expiry, key deleted, lease revoked), cuts etcd off and resigns with a
short timeout. Invariants: (a) the work thread is started only while we lead; never a
resign while a work thread runs (a resign that times out keeps leadership until the work
has returned); (b) a work that honours ``stop`` has returned soon after a loss; (c) after
the final resign, no work thread runs and no key is left; (d) with again=True, the run ends
only when resigned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.model_election import LOSSES, FakeLeadership, ModelElection

import geeh
from geeh.errors import CandidateRemoved, EtcdUnavailable, SessionExpired

SCHEDULES = 60
WORKS = ("returns", "raises", "honours", "stubborn", "stubborn")
ACTIONS = ("win",) * 5 + ("lose",) * 3 + ("step",) * 2 + ("outage", "release", "resign")


class Recording(concurrent.futures.ThreadPoolExecutor):
    """The loop's executor: notes, on the loop, whether we lead as each work thread starts."""

    def __init__(self) -> None:
        super().__init__(max_workers=4, thread_name_prefix="model-work")
        self.on_submit: Callable[[], None] = lambda: None

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.on_submit()
        return super().submit(fn, *args, **kwargs)


class BlockingSchedule:
    def __init__(self, seed: int, queue: geeh.ActiveCompletionQueue, executor: Recording) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.again = seed % 4 != 0
        self.queue = queue
        self.model = ModelElection()
        self.model.on_resign = self.check_resign
        self.violations: list[str] = []
        self.running = 0  # work threads started and not yet returned
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.outage_steps = 0
        # Each honouring work's leadership, and an event set as it returns.
        self.honouring: list[tuple[FakeLeadership, threading.Event]] = []
        client = geeh.Client("model:2379", discover=False)
        client.election = lambda name: self.model  # type: ignore[method-assign,assignment,return-value]
        self.election = geeh.LeaderElection(queue, client, "model", "v", ttl=1)
        executor.on_submit = self.check_start

    def violate(self, what: str) -> None:
        self.violations.append(f"blocking seed {self.seed} again={self.again}: {what}")

    def check_start(self) -> None:  # on the loop, as the work thread is submitted
        if not self.model.leading(self.election.leadership):
            self.violate("(a) work thread started while not leader")

    def check_resign(self, leadership: FakeLeadership) -> None:  # on the loop
        with self.lock:
            if self.running:
                self.violate("(c) resigned while the work thread runs")

    def work(self, stop: threading.Event) -> Any:
        with self.lock:
            self.running += 1
        behaviour = self.rng.choice(WORKS)
        done = threading.Event()
        leadership = self.election.leadership
        if behaviour == "honours" and isinstance(leadership, FakeLeadership):
            self.honouring.append((leadership, done))
        try:
            if behaviour == "returns":
                return "returned"
            if behaviour == "raises":
                raise RuntimeError("work failed")
            stop.wait()
            if behaviour == "stubborn":
                self.release.wait()
            return "stopped"
        finally:
            with self.lock:
                self.running -= 1
            done.set()

    def on_loop(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        self.queue.call(run(), timeout=5)

    def act(self, action: str) -> None:
        model = self.model
        if action == "win":
            self.on_loop(model.win)
        elif action == "lose":
            kind = self.rng.choice(sorted(LOSSES))
            in_line = self.rng.random() < 0.3

            def lose() -> None:
                leadership = model.leadership
                if leadership is not None and leadership.is_leader:
                    leadership.lose(LOSSES[kind]())
                elif in_line:  # fails the campaign
                    if kind == "deleted":
                        model.fail(CandidateRemoved("candidate key deleted while waiting"))
                    else:
                        model.fail(SessionExpired("session expired while waiting"))

            self.on_loop(lose)
            for leadership, done in self.honouring:  # (b): the loss stops it
                if leadership.lost.reason is not None and not done.wait(5):
                    self.violate("(b) honouring work still runs 5s after a loss")
        elif action == "outage":  # for a few steps

            def start() -> None:
                model.outage = True
                model.fail(EtcdUnavailable("etcd unavailable (scripted outage)"))

            self.outage_steps = self.rng.randint(1, 3)
            self.on_loop(start)
        elif action == "resign":
            try:
                self.election.resign(timeout=0.02)
            except geeh.Timeout:
                pass  # the work is still stopping: leadership is kept (check_resign)
            except geeh.EtcdUnavailable:
                pass  # the outage: the key goes in the background (retry if it raised)
        elif action == "release":
            self.release.set()
        else:
            self.release.wait(0.002)  # a step of the schedule, not a synchronisation

    def run(self) -> list[str]:
        running = self.election.run(self.work, again=self.again, grace=0.5)
        resigned = False
        for _ in range(self.rng.randint(5, 25)):
            if running.done():
                break
            action = self.rng.choice(ACTIONS)
            resigned = resigned or action == "resign"
            self.act(action)
            if self.outage_steps:
                self.outage_steps -= 1
                if not self.outage_steps:
                    self.on_loop(lambda: setattr(self.model, "outage", False))
        if running.done() and self.again and not resigned:
            self.violate(f"(d) again=True, but the run ended: {_outcome(running)}")
        self.act("resign")  # quick: may time out while a stubborn work still runs
        self.release.set()
        self.on_loop(lambda: setattr(self.model, "outage", False))
        self.election.resign(timeout=5)
        if not running.done():
            self.violate("the run did not end after resign")
        with self.lock:
            if self.running:
                self.violate("(c) a work thread runs after the final resign")
        if self.model.keys:
            self.violate(f"(c) keys left after the final resign: {sorted(self.model.keys)}")
        return self.violations


def _outcome(future: concurrent.futures.Future[Any]) -> object:
    if future.cancelled():
        return "cancelled"
    return future.exception() or future.result()


@pytest.fixture
def recorded_queue() -> Iterator[tuple[geeh.ActiveCompletionQueue, Recording]]:
    executor = Recording()
    with geeh.ActiveCompletionQueue() as q:

        async def install() -> None:
            asyncio.get_running_loop().set_default_executor(executor)

        q.call(install())
        yield q, executor
    executor.shutdown(wait=True)


def test_blocking_schedules_keep_the_invariants(
    recorded_queue: tuple[geeh.ActiveCompletionQueue, Recording],
) -> None:
    q, executor = recorded_queue
    violations: list[str] = []
    for seed in range(SCHEDULES):
        violations += BlockingSchedule(seed, q, executor).run()
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations[:20])

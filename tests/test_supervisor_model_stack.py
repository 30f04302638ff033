"""The supervisor's model-based test over the whole stack, on the scripted etcd member.

A few seeded schedules in which everything under Election.run is real (campaign, session,
leadership, own-key watch, transport) and only etcd is scripted (support.fake_etcd): our key
deleted or our lease revoked (the watch delivers the deletion), etcd refusing every request
for a while, the caller's cancellation and the client's close, against work that returns,
raises, is cancelled by other code, honours cancellation, or ignores it for a while. The
scripted election of test_supervisor_model.py drives many more schedules; these check
that the same invariants hold with the real parts: (a) work starts only while our key leads
in the store; (c) when run() ends, no work runs and no key of ours is left; (d) with
again=True, run() ends only on cancellation or close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from support.fake_etcd import FakeEtcd, fake_client, installed
from support.wait import eventually

import geeh
from geeh import supervisor
from geeh.keys import election_prefix
from geeh.net.retry import LEASE_GRANT, LEASE_REVOKE, RANGE, TXN, Backoff

SCHEDULES = 12
WORKS = ("returns", "raises", "self_cancel", "honours", "stubborn")
ACTIONS = ("step", "step", "revoke", "delete", "outage", "cancel", "close")
OUTAGE = (TXN.path, RANGE.path, LEASE_GRANT.path, LEASE_REVOKE.path)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEtcd]:
    # Short pauses between campaigns: the schedules cause many losses.
    monkeypatch.setattr(supervisor, "Backoff", lambda **_: Backoff(base=0.001, cap=0.01))
    async with installed(monkeypatch) as fake:
        yield fake


class StackSchedule:
    def __init__(self, fake: FakeEtcd, seed: int) -> None:
        self.fake = fake
        self.seed = seed
        self.rng = random.Random(seed)
        self.again = seed % 3 != 0
        self.name = f"m{seed}"
        self.prefix = election_prefix(self.name)
        self.client = fake_client()
        self.tasks: list[asyncio.Task[Any]] = []  # the work tasks
        self.violations: list[str] = []
        self.cancelled = self.closed = False
        self.closing: asyncio.Future[None] | None = None

    def violate(self, what: str) -> None:
        self.violations.append(f"stack seed {self.seed} again={self.again}: {what}")

    def ours(self) -> list[Any]:
        """Our candidate keys in the store, oldest first."""
        kvs = [kv for key, kv in self.fake.state().items() if key.startswith(self.prefix)]
        return sorted(kvs, key=lambda kv: kv.create_revision)

    async def work(self, leadership: geeh.Leadership) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        line = self.ours()
        if not leadership.is_leader or not line or line[0].key != leadership.key:
            self.violate("(a) work started while our key does not lead in the store")
        behaviour = self.rng.choice(WORKS)
        if behaviour == "returns":
            return leadership.token
        if behaviour == "raises":
            raise RuntimeError("work failed")
        if behaviour == "self_cancel":
            other = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(other.cancel)
            await other
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if behaviour == "stubborn":
                for _ in range(self.rng.randint(1, 50)):
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(0)
            raise

    def lose(self, how: str) -> None:
        line = self.ours()
        if not line:
            return
        kv = line[0]
        watch = self.fake.watch_on(kv.key)
        if watch is None:  # not leading yet: nothing watches the key to tell
            return
        events = self.fake.revoke(kv.lease) if how == "revoke" else self.fake.delete(kv.key)
        self.fake.push(watch, events)

    def act(self, action: str, run: asyncio.Future[Any]) -> None:
        if action in ("revoke", "delete"):
            self.lose(action)
        elif action == "outage":
            if self.fake.faults:
                self.fake.heal()
            else:
                for path in OUTAGE:
                    self.fake.fail(path, grpc.StatusCode.UNAVAILABLE, "scripted outage", times=None)
        elif action == "cancel" and not self.cancelled:
            self.cancelled = True
            run.cancel()
        elif action == "close" and not self.closed:
            self.closed = True
            self.closing = asyncio.ensure_future(self.client.close())

    async def run(self) -> list[str]:
        election = self.client.election(self.name)
        run = asyncio.ensure_future(election.run(self.work, b"v", ttl=5, again=self.again))
        for _ in range(self.rng.randint(3, 12)):
            if run.done():
                break
            self.act(self.rng.choice(ACTIONS), run)
            await asyncio.wait({run}, timeout=0.01)  # a step of the schedule
        self.fake.heal()
        if not run.done():
            self.act(self.rng.choice(("cancel", "close")), run)
        done, _ = await asyncio.wait({run}, timeout=5)
        if not done:
            self.violate("run() did not end after cancel or close")
        else:
            self.check_end(run)
        await self.client.close()
        return self.violations

    def check_end(self, run: asyncio.Future[Any]) -> None:
        if any(not task.done() for task in self.tasks):
            self.violate("(c) run() ended while work runs")
        if run.cancelled() and not self.cancelled:
            self.violate("(d) run() raised CancelledError but was not cancelled")
        if self.again and not (self.cancelled or self.closed):
            outcome = "cancelled" if run.cancelled() else run.exception() or run.result()
            self.violate(f"(d) again=True, but run() ended with {outcome!r}")

    async def keys_left(self) -> None:
        """(c): no key of ours is left (one lost under an outage goes in the background)."""
        await eventually(lambda: not self.ours(), timeout=5, what=f"seed {self.seed}: no key")


async def test_stack_schedules_keep_the_invariants(
    fake: FakeEtcd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="geeh")
    violations: list[str] = []
    for seed in range(SCHEDULES):
        schedule = StackSchedule(fake, seed)
        violations += await schedule.run()
        await schedule.keys_left()
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations[:20])

"""Sharded leadership: N shards, each a plain election, balanced across the live members.

    shards = client.shards("jobs", count=256)
    await shards.run(work, value=b"worker-7", ttl=10)   # work(shard, leadership) per shard led

A member is one session (one lease for all its shards) and a key ``NAME/members/<lease>``
on it. Shard ``i`` is the election ``NAME/i``. Each member reads the keys under ``NAME/``
whenever they change and applies the balance rule (balance.py); then, for each shard:

- assigned to us, not in its line: campaign (join the line and wait);
- led by us, assigned to another member that is already waiting in its line: hand it over
  with :meth:`Leadership.transfer` (the work is stopped just before), one hand-off, no gap;
- waiting in its line, no longer assigned to us: withdraw.

A crashed member's keys go with its lease; the shards it led are then unowned, and the members
the rule gives them to win them at once. Leaving (cancelling :meth:`Shards.run`) removes the
member key first and hands every shard over before the session is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ._proto import rpc_pb2 as rpc
from .balance import MEMBERS, View, assign, parse
from .core import Core
from .election import DEFAULT_TTL, Election
from .errors import (
    ClosedError,
    Compacted,
    ElectionError,
    EtcdError,
    InvalidArgument,
    NotLeader,
    SessionExpired,
    TransferFailed,
)
from .keys import election_prefix, prefix_end, show, to_bytes
from .leadership import Leadership
from .net.retry import RANGE, SAFE, TXN, Backoff
from .session import Session, check_ttl, safety_margin
from .supervisor import stop_work
from .tasks import failed

log = logging.getLogger("geeh.shards")

ShardWork = Callable[[int, Leadership], Awaitable[Any]]
# Changes come in bursts (a member joins N lines at once): one read per burst, not per event.
SETTLE = 0.05
# Read again this often with no change at all: a campaign that failed (etcd unreachable, say)
# is retried even if nothing else happens. Changes are followed by the watch, not by this.
REREAD = 30.0


class Shards:
    """``count`` shards of work under ``name``; get it from :meth:`geeh.Client.shards`."""

    def __init__(self, core: Core, name: str | bytes, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count must be a positive int, got {count!r}")
        self._core = core
        self.prefix = election_prefix(name)
        self.name = self.prefix[:-1]
        self.count = count
        self.end = prefix_end(self.prefix)  # the range end covering every key of the shards

    def election(self, shard: int) -> Election:
        """The plain election of ``shard``: ``NAME/<shard>``."""
        return Election(self._core, self.name + b"/%d" % shard)

    async def view(self) -> View:
        """Members, owners and lines as etcd has them now (what ``geeh shards`` shows)."""
        request = rpc.RangeRequest(key=self.prefix, range_end=self.end)
        response = await self._core.transport.call(RANGE, request, what=f"shards {self}")
        return parse(self.prefix, self.count, response.header.revision, list(response.kvs))

    async def follow(self) -> AsyncGenerator[View, None]:
        """The view now, then again after every change under ``NAME/`` (a fresh read each)."""
        view = await self.view()
        yield view
        while True:
            watch = self._core.watches.watch(
                self.prefix, range_end=self.end, start_revision=view.revision + 1
            )
            with watch, contextlib.suppress(Compacted):
                await watch.next()
            view = await self.view()
            yield view

    async def run(
        self,
        work: ShardWork,
        value: str | bytes,
        *,
        ttl: int = DEFAULT_TTL,
        grace: float | None = None,
        leave_timeout: float | None = None,
    ) -> None:
        """Run ``await work(shard, leadership)`` for each shard this member leads, until cancelled.

        Each shard's work has its own :class:`~geeh.Leadership` (fenced ``put``/``txn`` with
        that shard's token). It is cancelled and awaited (within ``grace``, default the
        session's safety margin) when the shard leaves: lost, or handed to another member.
        Work that returns or raises (logged) keeps the shard until it moves. Cancel the call
        to leave: the member key goes first, then each shard is handed to the member that
        takes it (at most ``leave_timeout`` seconds, default ``ttl``; what is left is
        resigned). If the session expires, everything stops and the member joins again.
        Returns when the client closes.
        """
        if not callable(work):
            raise InvalidArgument(f"work must be an async function, not {type(work).__name__}")
        data = to_bytes(value, "value")
        ttl = check_ttl(ttl)
        if grace is not None and not grace >= 0:
            raise InvalidArgument(f"grace must be a number of seconds >= 0, got {grace!r}")
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            if self._core.closed:
                return
            member = _Member(self._core, self, work, data, ttl, grace, leave_timeout or float(ttl))
            try:
                await member.run()
            except ClosedError:
                return
            except SessionExpired as err:
                log.warning("member of %s: %s; joining again", show(self.name), err)
            await asyncio.sleep(backoff.next_delay())

    def __repr__(self) -> str:
        return f"<Shards {show(self.name)} count={self.count}>"


class _Member:
    """One membership: a session, its member key, a task per shard it campaigns in or leads."""

    def __init__(
        self,
        core: Core,
        shards: Shards,
        work: ShardWork,
        value: bytes,
        ttl: int,
        grace: float | None,
        leave_timeout: float,
    ) -> None:
        self.shards = shards
        self.core = core
        self.work = work
        self.value = value
        self.ttl = ttl
        self.grace = grace
        self.leave_timeout = leave_timeout
        self.slots: dict[int, _Slot] = {}
        self.wake = asyncio.Event()

    async def run(self) -> None:
        core = self.core
        session = self.session = await Session.grant(core, self.ttl)
        core.sessions.add(session)
        expired = asyncio.Event()
        session.expired.add_callback(lambda _: expired.set())
        self.key = self.shards.prefix + MEMBERS + b"/%x" % session.lease
        try:
            put = rpc.PutRequest(key=self.key, value=self.value, lease=session.lease)
            await core.transport.call(TXN, _put_new(put), retry=SAFE, what="join shards")
            async with asyncio.TaskGroup() as group:
                self.group = group
                try:
                    await _first(self._control(leaving=False), expired.wait())
                except asyncio.CancelledError:
                    await self._leave(expired)
                    raise
                for slot in self.slots.values():
                    slot.task.cancel()
        finally:
            await session.close()
        # Here only if the session ended (raised after the group: not as an ExceptionGroup).
        raise session.expired.reason or SessionExpired("the session was closed")

    async def _leave(self, expired: asyncio.Event) -> None:
        """Remove our member key, then hand every shard over (bounded); the rest resigns."""
        if expired.is_set():
            return
        try:
            async with asyncio.timeout(self.leave_timeout):
                delete = rpc.DeleteRangeRequest(key=self.key)
                await self.core.transport.call(
                    TXN, rpc.TxnRequest(success=[rpc.RequestOp(request_delete_range=delete)])
                )
                await _first(self._control(leaving=True), expired.wait())
        except TimeoutError:
            log.warning("leaving %s: shards not handed over in time", show(self.shards.name))
        except (EtcdError, ClosedError) as err:
            log.warning("leaving %s: %s", show(self.shards.name), err)

    async def _control(self, *, leaving: bool) -> None:
        """Read, apply the rule, act; again on every change (and every REREAD seconds)."""
        shards = self.shards
        revision = 0
        while True:
            self.wake.clear()  # before the read: a slot that ends after it wakes us again
            try:
                view = await shards.view()
            except EtcdError as err:
                log.debug("reading %s: %s", show(shards.name), err)
                await asyncio.sleep(0.5)
                continue
            if leaving and not self.slots:
                return
            self._act(view, leaving)
            if leaving and not view.members:
                for slot in self.slots.values():
                    slot.task.cancel()  # nobody to take them: resign
            revision = view.revision
            watch = self.core.watches.watch(
                shards.prefix, range_end=shards.end, start_revision=revision + 1
            )
            with watch, contextlib.suppress(Compacted, TimeoutError):
                async with asyncio.timeout(REREAD):
                    await _first(watch.next(), self.wake.wait())
                await asyncio.sleep(SETTLE)

    def _act(self, view: View, leaving: bool) -> None:
        me = self.session.lease
        owners = {shard: owner.lease for shard, owner in view.owners.items()}
        plan = assign(self.shards.count, view.members, owners)
        for shard, taker in enumerate(plan):
            slot = self.slots.get(shard)
            if taker == me and not leaving:
                if slot is None:
                    self._start(shard)
                continue
            if slot is None:
                continue
            if slot.leadership is None:
                slot.task.cancel()  # waiting in a line we are not meant for: withdraw
            elif taker is not None and taker in view.lines.get(shard, {}):
                slot.give(view.lines[shard][taker])

    def _start(self, shard: int) -> None:
        slot = _Slot(self, shard)
        slot.task = self.group.create_task(slot.run(), name=f"geeh-shard-{shard}")
        self.slots[shard] = slot

        def ended(task: asyncio.Task[None]) -> None:
            if self.slots.get(shard) is slot:
                del self.slots[shard]
            failed(task, f"shard {shard}")
            self.wake.set()

        slot.task.add_done_callback(ended)


class _Slot:
    """Our part in one shard: campaign, run the work while leading, hand over when told."""

    task: asyncio.Task[None]

    def __init__(self, member: _Member, shard: int) -> None:
        self.member = member
        self.shard = shard
        self.leadership: Leadership | None = None
        self.target: bytes | None = None
        self.told = asyncio.Event()

    def give(self, target: bytes) -> None:
        if self.target is None:
            self.target = target
            self.told.set()

    async def run(self) -> None:
        member = self.member
        election = member.shards.election(self.shard)
        try:
            campaign = election.campaign(member.value, session=member.session)
            leadership = self.leadership = await campaign
        except (ElectionError, EtcdError) as err:
            log.debug("shard %d: campaign ended: %s", self.shard, err)
            return
        member.wake.set()
        grace = member.grace
        if grace is None:
            grace = safety_margin(member.ttl)
        name = f"{show(member.shards.name)}/{self.shard}"
        work = self._start_work(leadership)
        try:
            while True:
                lost = asyncio.ensure_future(leadership.lost.wait())
                told = asyncio.ensure_future(self.told.wait())
                try:
                    await asyncio.wait({lost, told}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    told.cancel()
                if leadership.lost.is_set():
                    return
                target, self.target = self.target, None
                self.told.clear()
                assert target is not None
                try:
                    await leadership.transfer(
                        to=target, before_hand_over=functools.partial(stop_work, work, name, grace)
                    )
                    return
                except TransferFailed as err:
                    log.info("shard %s: hand-over failed: %s", name, err)
                    if work.done() and leadership.is_leader:
                        work = self._start_work(leadership)
                except NotLeader:
                    return
        finally:
            # A cancellation while the work stops is held until the shard is resigned.
            cancelled = await stop_work(work, name, grace)
            if leadership.is_leader:
                with contextlib.suppress(Exception):
                    await leadership.resign(timeout=2.0)
            if cancelled:
                raise asyncio.CancelledError()

    def _start_work(self, leadership: Leadership) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(
            _run_work(self.member.work, self.shard, leadership), name=f"geeh-work-{self.shard}"
        )
        return task


async def _run_work(work: ShardWork, shard: int, leadership: Leadership) -> None:
    try:
        await work(shard, leadership)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("work for shard %d raised; the shard is held until it moves", shard)


def _put_new(put: rpc.PutRequest) -> rpc.TxnRequest:
    """Create the key unless it exists (a resend after a lost answer changes nothing)."""
    exists = rpc.Compare(
        key=put.key, target=rpc.Compare.CREATE, result=rpc.Compare.GREATER, create_revision=0
    )
    return rpc.TxnRequest(compare=[exists], failure=[rpc.RequestOp(request_put=put)])


async def _first(*aws: Awaitable[Any]) -> None:
    """Await the first of ``aws`` to finish (its error raised); cancel and await the others."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

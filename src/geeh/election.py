"""The election recipe: etcd's Go ``concurrency.Election``, step for step, made failure-proof.

    join:   Txn(if CreateRevision(key) == 0 then Put(key, value, lease) else Range(key))
            key = prefix + lease ID in hex; my revision = the key's create revision
    wait:   loop: read the newest key created before mine;
                  none -> elected; else watch that one key until it is deleted
    lead:   until resign (guarded delete) or loss (our key deleted, lease lost)

Where it differs from Go, it is to be correct under failure:
- the wait's read also returns our own key, so a campaign whose key or lease vanished fails
  (CandidateRemoved, SessionExpired) instead of reporting a win;
- every write is a compare-and-swap, so a retry after a lost response cannot change the
  outcome; a failed or cancelled campaign deletes its key, whatever state it was in.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Generator
from typing import Any

from . import withdraw
from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import (
    CandidateRemoved,
    ClosedError,
    Compacted,
    ElectionError,
    EtcdError,
    InvalidArgument,
    SessionExpired,
)
from .keys import candidate_key, election_prefix, prefix_end, show, to_bytes
from .leader import Leader
from .leadership import Leadership, modified_at, owns
from .net.retry import RANGE, SAFE, TXN
from .observe import Observation
from .session import Session, check_ttl
from .supervisor import OnElected, OnLost, Supervisor, Work
from .watch import NOPUT, Inbox, Watch, WatchHub

log = logging.getLogger("geeh.election")

DEFAULT_TTL = 10
# etcd's default --max-request-bytes; a larger value would be refused by etcd anyway.
MAX_VALUE_BYTES = 1536 * 1024
# How long a waiting candidate lets a hand-off settle before its read-ahead (see _Line.watch).
READ_AHEAD_DELAY = 0.05


class Election:
    """One named election. Get it from :meth:`geeh.Client.election`."""

    def __init__(self, core: Core, name: str | bytes) -> None:
        self._core = core
        self.prefix = election_prefix(name)
        self.name = self.prefix[:-1]
        self._end = prefix_end(self.prefix)

    async def leader(self) -> Leader | None:
        """The current leader (the lowest create revision under the prefix), or None."""
        response = await self._core.transport.call(
            RANGE, self._first_request(), what=f"leader of {show(self.name)}"
        )
        return Leader.from_kv(response.kvs[0]) if response.kvs else None

    async def candidates(self) -> list[Leader]:
        """Every candidate in line, leader first (create-revision order)."""
        request = rpc.RangeRequest(
            key=self.prefix,
            range_end=self._end,
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
        )
        response = await self._core.transport.call(
            RANGE, request, what=f"candidates of {show(self.name)}"
        )
        return [Leader.from_kv(kv) for kv in response.kvs]

    def _first_request(self) -> rpc.RangeRequest:
        return rpc.RangeRequest(
            key=self.prefix,
            range_end=self._end,
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
            limit=1,
        )

    def observe(self) -> Observation:
        """Leader changes, as an async iterator: the current leader first, then every change.

        None means "no leader". Use ``async with election.observe() as changes:`` (or call
        ``aclose()``) to stop early; the client's close ends it too.
        """
        return Observation(self._core, self.prefix, self._end)

    def campaign(
        self,
        value: str | bytes,
        *,
        ttl: int = DEFAULT_TTL,
        session: Session | None = None,
        lease: int | None = None,
    ) -> Campaign:
        """Run for leader with ``value``.

        Await the result for a :class:`~geeh.Leadership` once elected, or use it as
        ``async with election.campaign(value) as leadership:``, which resigns on exit. By
        default a new session (lease of ``ttl`` seconds) is made for the campaign and revoked
        when it ends; pass ``session`` to share one, or ``lease`` to resume an existing lease
        (after a restart: the same key is adopted, no new grant).
        """
        return Campaign(self, value, ttl=ttl, session=session, lease=lease)

    async def run(
        self,
        work: Work,
        value: str | bytes,
        *,
        ttl: int = DEFAULT_TTL,
        again: bool = True,
        grace: float | None = None,
        on_elected: OnElected | None = None,
        on_lost: OnLost | None = None,
    ) -> Any:
        """Run ``await work(leadership)`` only while leader, campaigning again after each loss.

        On a loss, ``work`` is cancelled and awaited (it should stop within ``grace``
        seconds; default: the session's safety margin) before
        anything else happens. When ``work`` returns or raises (the error is logged), we
        resign; then, with ``again`` (the default), campaign again; otherwise return its
        result or raise its error. ``on_elected(leadership)`` and ``on_lost(leadership,
        reason)`` are called at the start and end of each term (reason None after a
        resign). Cancel the call to stop: it resigns if leading, withdraws if waiting.
        Returns None when the client closes.
        """
        supervisor = Supervisor(
            self,
            work,
            value,
            ttl=ttl,
            again=again,
            grace=grace,
            on_elected=on_elected,
            on_lost=on_lost,
        )
        return await supervisor.run()

    def __repr__(self) -> str:
        return f"<Election {self.name!r}>"


class Campaign:
    """A campaign in progress: awaitable (-> Leadership) and an async context manager."""

    def __init__(
        self,
        election: Election,
        value: str | bytes,
        *,
        ttl: int,
        session: Session | None,
        lease: int | None,
    ) -> None:
        self.election = election
        self.value = to_bytes(value, "value")
        if len(self.value) > MAX_VALUE_BYTES:
            raise InvalidArgument(
                f"value is {len(self.value)} bytes; etcd accepts at most {MAX_VALUE_BYTES} "
                "by default"
            )
        self.ttl = check_ttl(ttl)
        if session is not None and lease is not None:
            raise InvalidArgument("pass either session or lease, not both")
        if session is not None and not isinstance(session, Session):
            raise InvalidArgument(f"session must be a geeh Session, not {type(session).__name__}")
        self._session = session
        self._lease = lease
        self._leadership: Leadership | None = None

    def __await__(self) -> Generator[Any, None, Leadership]:
        return self._run().__await__()

    async def __aenter__(self) -> Leadership:
        self._leadership = await self._run()
        return self._leadership

    async def __aexit__(self, *exc: object) -> None:
        leadership = self._leadership
        if leadership is None:
            return
        if leadership.lost.reason is not None:
            return  # lost already: its clean-up runs in the background, nothing to hand over
        await leadership.resign()

    async def _run(self) -> Leadership:
        core = self.election._core
        core.check_open()
        owns_session = self._session is None
        if self._session is not None:
            session = self._session
        elif self._lease is not None:
            session = await Session.resume(core.transport, core.lessor, self._lease)
        else:
            session = await Session.grant(core.transport, core.lessor, self.ttl)
        if owns_session:
            core.sessions.add(session)
        key = candidate_key(self.election.prefix, session.lease)
        gone: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        watcher: asyncio.Task[None] | None = None

        def expired(reason: BaseException | None) -> None:
            if not gone.done():
                gone.set_result(reason or ClosedError("the session was closed"))

        try:
            session.check()
            session.expired.add_callback(expired)
            join_revision, token = await self._join(session, key)
            watcher = asyncio.ensure_future(self._watch_own_key(key, token, join_revision, gone))
            await self._wait(session, key, token, gone)
            leadership = Leadership(
                core,
                self.election.name,
                session,
                owns_session,
                key,
                self.value,
                token,
                gone,
                watcher,
                detach=lambda: session.expired.remove_callback(expired),
            )
            core.leaderships.add(leadership)
            return leadership
        except BaseException:
            if watcher is not None:
                watcher.cancel()
            session.expired.remove_callback(expired)
            await core.tasks.finish(self._withdraw(session, key, owns_session), name="withdraw")
            raise

    async def _join(self, session: Session, key: bytes) -> tuple[int, int]:
        """Create our key, or adopt it if it exists (a retry, or a resumed lease).

        Returns (revision at which the key is known to exist, its create revision). Resent
        after a lost answer: while the campaign lasts, a first attempt applied late finds the
        key there and changes nothing; after a withdraw it would create the key again, so an
        attempt without an answer is recorded for the withdraw (see withdraw.py).
        """
        transport = self.election._core.transport
        candidacy = await withdraw.joining(session, key)
        put = rpc.PutRequest(key=key, value=self.value, lease=session.lease)
        txn = rpc.TxnRequest(
            compare=[owns(key, 0)],
            success=[rpc.RequestOp(request_put=put)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        try:
            response = await transport.call(
                TXN, txn, retry=SAFE, unknown=candidacy.attempt_lost, what="join election"
            )
        except EtcdError as err:
            if err.code == "NOT_FOUND":  # "requested lease not found"
                raise SessionExpired(f"lease {session.lease:x} is gone: {err}") from None
            raise
        if response.succeeded:
            candidacy.token = response.header.revision
            return response.header.revision, response.header.revision
        existing = response.responses[0].response_range.kvs[0]
        token = candidacy.token = existing.create_revision
        if existing.value != self.value:
            # Guarded on the version it replaces too, so that one applied late cannot
            # overwrite a value written after it.
            update = rpc.TxnRequest(
                compare=[owns(key, token), modified_at(key, existing.mod_revision)],
                success=[rpc.RequestOp(request_put=put)],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
            )
            again = await transport.call(TXN, update, retry=SAFE, what="join election")
            if not again.succeeded:
                kvs = again.responses[0].response_range.kvs
                if not kvs or kvs[0].create_revision != token or kvs[0].value != self.value:
                    raise CandidateRemoved(f"candidate key {show(key)} changed while joining")
        return response.header.revision, token

    async def _wait(
        self, session: Session, key: bytes, token: int, gone: asyncio.Future[BaseException]
    ) -> None:
        """Wait until no key created before ours is left; fail if ours goes first.

        Go reads again after each deletion of its predecessor; so does this, with changes
        that take the read off the hand-off's critical path (see :class:`_Line`):
        - the read returns our key and up to two older ones, the predecessor and the key
          before it, each watched from the read's revision on;
        - if the predecessor is the only older key and goes while ours exists, we lead as of
          that revision, with no read: older keys never appear again (create revisions only
          grow). A watch spanning our key and the predecessor's (the key range between
          them) delivers their deletions in revision order, so ours cannot go unseen first;
        - when the key before the predecessor goes, the predecessor leads; we read again a
          moment later (or never, if the read saw nothing older), ready for the case above.
        Our own key's deletion ends the campaign (CandidateRemoved), even in the same batch.
        """
        core = self.election._core
        while True:
            if gone.done():
                raise gone.result()
            session.check()
            response = await core.transport.call(
                RANGE,
                rpc.RangeRequest(
                    key=self.election.prefix,
                    range_end=self.election._end,
                    max_create_revision=token,
                    sort_order=rpc.RangeRequest.DESCEND,
                    sort_target=rpc.RangeRequest.CREATE,
                    limit=3,
                    keys_only=True,
                ),
                what="campaign",
            )
            kvs = response.kvs
            if not kvs or kvs[0].key != key or kvs[0].create_revision != token:
                if gone.done():
                    raise gone.result()
                raise CandidateRemoved(f"candidate key {show(key)} was deleted while waiting")
            if len(kvs) == 1:
                return
            older = [kv.key for kv in kvs[1:]]
            with _Line(core.watches, key, older, complete=not response.more) as line:
                outcome = await line.watch(response.header.revision + 1, gone)
            if outcome is _Outcome.LEAD:
                return
            if outcome is _Outcome.CONFIRM:
                if await self._still_ours(key, token, line.revision):
                    return
                raise CandidateRemoved(f"candidate key {show(key)} was deleted while waiting")

    async def _still_ours(self, key: bytes, token: int, revision: int) -> bool:
        """Whether our key existed at ``revision`` (and so all along: same create revision).

        A serializable read is enough, and saves a round of consensus, when it answers from a
        state at or after ``revision``: the member we watch sent that revision's event only
        once it had applied it. After a failover to a member behind, read linearizably.
        """
        transport = self.election._core.transport
        for serializable in (True, False):
            response = await transport.call(
                RANGE,
                rpc.RangeRequest(key=key, keys_only=True, serializable=serializable),
                what="campaign",
            )
            if response.header.revision >= revision:
                break
        return bool(response.kvs) and response.kvs[0].create_revision == token

    async def _watch_own_key(
        self, key: bytes, token: int, revision: int, gone: asyncio.Future[BaseException]
    ) -> None:
        """Resolve ``gone`` when our key is deleted; re-read after compaction."""
        core = self.election._core
        while True:
            own = core.watches.watch(key, start_revision=revision + 1, filters=[NOPUT])
            with own:
                try:
                    await _next_delete(own)
                except Compacted:
                    response = await core.transport.call(
                        RANGE, rpc.RangeRequest(key=key, keys_only=True), what="campaign"
                    )
                    if response.kvs and response.kvs[0].create_revision == token:
                        revision = response.header.revision
                        continue
                except ClosedError:
                    return
            if not gone.done():
                gone.set_result(
                    CandidateRemoved(
                        f"candidate key {show(key)} was deleted (or its lease revoked)"
                    )
                )
            return

    async def _withdraw(self, session: Session, key: bytes, owns_session: bool) -> None:
        """Remove what a failed or cancelled campaign left: our key, and our own lease.

        Our own session: revoking its lease deletes the key, and a join attempt applied later
        fails ("requested lease not found"). A shared session's lease lives on: the key is
        deleted until etcd confirms it, and watched for a late join (see withdraw.py).
        """
        if owns_session:
            await session.close()  # revoking the lease deletes the key with it
            return
        await withdraw.withdraw(self.election._core, session, key)


async def _next_delete(w: Watch) -> None:
    while True:
        batch = await w.next()
        if any(e.type == e.DELETE for e in batch.events):
            return


class _Outcome(enum.Enum):
    LEAD = "no older key is left, and ours is in place"
    CONFIRM = "no older key is left; check ours is in place"
    READ = "read again: the line ahead changed or a watch broke off"


class _Line:
    """The keys just ahead of ours in line (newest first), and the watches on them.

    Only a line that is ``complete`` (nothing older than ``older[-1]`` at the read) can end in
    a win; the others end in a read. A complete line watches the key range spanning our key
    and the predecessor's, for the ordered win with no read. But key order is lease-ID order,
    not join order (leases from different members, or granted concurrently), so the range may
    hold other candidates' keys, whose deletions would reach us too: a herd in a large
    election. Lines far back therefore watch the predecessor's key alone, and so does a
    complete line after the first deletion of another key in its range; if the predecessor
    then goes, our own key is confirmed by a read instead of by the order of events.
    """

    def __init__(self, hub: WatchHub, key: bytes, older: list[bytes], *, complete: bool) -> None:
        self._hub = hub
        self.key = key
        self.older = older
        self.complete = complete
        self._inbox: Inbox = asyncio.Queue()
        self._watches: dict[bytes, Watch] = {}
        self._ordered: Watch | None = None  # the watch spanning our key and the predecessor's
        self.revision = 0  # of the deletion that decided the outcome

    def _watch_predecessor(self, revision: int, *, ordered: bool) -> None:
        predecessor = self.older[0]
        if ordered:
            low, high = sorted((self.key, predecessor))
            self._ordered = self._watch(low, high + b"\x00", revision)
        else:
            self._ordered = None
            self._watch(predecessor, b"", revision)

    def _watch(self, key: bytes, range_end: bytes, revision: int) -> Watch:
        w = self._watches[key] = self._hub.watch(
            key, range_end=range_end, start_revision=revision, filters=[NOPUT], queue=self._inbox
        )
        return w

    async def watch(self, revision: int, gone: asyncio.Future[BaseException]) -> _Outcome:
        """Follow deletions ahead of us from ``revision`` until the outcome is known."""
        self._watch_predecessor(revision, ordered=self.complete)
        if len(self.older) == 2:
            self._watch(self.older[1], b"", revision)

        def woken(reason: asyncio.Future[BaseException]) -> None:
            self._inbox.put_nowait((None, reason.result()))  # type: ignore[arg-type]

        gone.add_done_callback(woken)
        read_at: float | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout_at(read_at):
                        w, item = await self._inbox.get()
                except TimeoutError:
                    return _Outcome.READ
                if w is not None and self._watches.get(w.key) is not w:
                    continue  # cancelled already
                if isinstance(item, Compacted):
                    return _Outcome.READ
                if isinstance(item, BaseException):
                    raise _reason(gone, item)
                deleted = {e.kv.key for e in item.events if e.type == e.DELETE}
                if self.key in deleted:
                    raise CandidateRemoved(
                        f"candidate key {show(self.key)} was deleted while waiting"
                    )
                ordered = w is self._ordered
                if ordered and deleted - {*self.older, self.key}:
                    self._watches.pop(w.key).cancel()  # crowded: see the class doc
                    self._watch_predecessor(w.next_revision, ordered=False)
                if len(self.older) == 2 and self.older[1] in deleted:
                    # Its watch is left to the line's end: no cancel sent mid-hand-off.
                    self.older.pop()
                    if not self.complete:
                        # Why later: this deletion is usually the old leader's, and our read
                        # (etcd sorts the whole election for it) would compete with the
                        # successor's takeover. Nothing needs it before the next hand-off.
                        read_at = asyncio.get_running_loop().time() + READ_AHEAD_DELAY
                if self.older[0] in deleted:
                    self.revision = item.events[-1].kv.mod_revision
                    if len(self.older) == 2 or not self.complete:
                        return _Outcome.READ
                    return _Outcome.LEAD if ordered else _Outcome.CONFIRM
        finally:
            gone.remove_done_callback(woken)

    def __enter__(self) -> _Line:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self._watches.values():
            w.cancel()
        self._watches.clear()


def _reason(gone: asyncio.Future[BaseException], item: BaseException) -> BaseException:
    reason = gone.result() if gone.done() else item
    if isinstance(reason, ElectionError | ClosedError):
        return reason
    return ClosedError(str(reason))

"""The election recipe: etcd's Go ``concurrency.Election``, step for step, made failure-proof.

    join:     Txn(if CreateRevision(key) == 0 then Put(key, value, lease) else Range(key))
              key = prefix + lease ID in hex; my revision = the key's create revision
    wait:     loop: read the newest keys created before mine; none -> elected;
                    else follow their deletions until the win rule (win.py) is met
    lead:     until resign (guarded delete) or loss (our key deleted, lease lost)
    withdraw: a failed or cancelled campaign deletes its key, whatever state it was in

Where it differs from Go, it is to be correct under failure:
- the wait's read also returns our own key, so a campaign whose key or lease vanished fails
  (CandidateRemoved, SessionExpired) instead of reporting a win;
- every write is a compare-and-swap, so a retry after a lost response cannot change the
  outcome;
- a watcher on our own key (own_key.py) reports its deletion; if that watcher fails, the
  campaign or leadership ends with CandidateRemoved (we can no longer tell, so we withdraw).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from typing import Any

from . import withdraw
from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import (
    CandidateRemoved,
    ClosedError,
    EtcdError,
    InvalidArgument,
    SessionExpired,
)
from .fencing import modified_at, owns
from .keys import candidate_key, election_prefix, prefix_end, show, to_bytes
from .leadership import Leadership
from .net.retry import RANGE, SAFE, TXN
from .own_key import watch_own_key
from .session import Session, check_ttl
from .tasks import stop
from .transfer import IntentFollower, StepAside
from .win import Line, Verdict

log = logging.getLogger("geeh.election")

DEFAULT_TTL = 10
# etcd's default --max-request-bytes; a larger value would be refused by etcd anyway.
MAX_VALUE_BYTES = 1536 * 1024


class Campaign:
    """A campaign in progress: awaitable (-> Leadership) and an async context manager."""

    def __init__(
        self,
        core: Core,
        name: bytes,
        value: str | bytes,
        *,
        ttl: int | None,
        session: Session | None,
        lease: int | None,
        cancel_on_loss: bool = True,
    ) -> None:
        self._core = core
        self.name = name
        self.prefix = election_prefix(name)
        self._end = prefix_end(self.prefix)
        self.value = to_bytes(value, "value")
        if len(self.value) > MAX_VALUE_BYTES:
            raise InvalidArgument(
                f"value is {len(self.value)} bytes; etcd accepts at most {MAX_VALUE_BYTES} "
                "by default"
            )
        if session is not None and lease is not None:
            raise InvalidArgument("pass either session or lease, not both")
        if ttl is not None and (session is not None or lease is not None):
            given = "session" if session is not None else "lease"
            raise InvalidArgument(f"ttl cannot be given with {given}: the lease has its own TTL")
        self.ttl = check_ttl(DEFAULT_TTL if ttl is None else ttl)
        if session is not None and not isinstance(session, Session):
            raise InvalidArgument(f"session must be a geeh Session, not {type(session).__name__}")
        self._session = session
        self._lease = lease
        self._cancel_on_loss = cancel_on_loss
        self._leadership: Leadership | None = None
        self._candidacy: withdraw.Candidacy | None = None  # what our join did, for after_term

    def __await__(self) -> Generator[Any, None, Leadership]:
        return self._run().__await__()

    async def __aenter__(self) -> Leadership:
        leadership = self._leadership = await self._run()
        leadership.cancel_on_loss = self._cancel_on_loss
        return await leadership.__aenter__()  # the block: see Leadership

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._leadership is not None:
            await self._leadership.__aexit__(exc_type, exc, tb)

    async def _run(self) -> Leadership:
        core = self._core
        core.check_open()
        started = core.events.campaign_started(self.name)
        owns_session = self._session is None
        if self._session is not None:
            session = self._session
        elif self._lease is not None:
            session = await Session.resume(core, self._lease)
        else:
            session = await Session.grant(core, self.ttl)
        if owns_session:
            core.sessions.add(session)
        key = candidate_key(self.prefix, session.lease)
        gone: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        watcher: asyncio.Task[None] | None = None

        def expired(reason: BaseException | None) -> None:
            if not gone.done():
                gone.set_result(reason or ClosedError("the session was closed"))

        try:
            session.check()
            session.expired.add_callback(expired)
            if self._lease is not None:
                await self._retire_earlier_holder(session, key)
            join_revision, token = await self._join(session, key)
            while True:
                watcher = asyncio.get_running_loop().create_task(
                    watch_own_key(core, key, token, join_revision, gone),
                    name=f"geeh-own-key-{session.lease:x}",
                )
                try:
                    # A fresh key: no transfer intent before it can concern it.
                    since = join_revision if join_revision == token else 0
                    await self._wait(session, key, token, gone, since)
                    break
                except StepAside:
                    await stop(watcher, f"watch on candidate key {show(key)}")
                    watcher = None
                    join_revision, token = await self._requeue(session, key, token)
            candidacy = self._candidacy
            leadership = Leadership(
                core,
                self.name,
                session,
                owns_session,
                key,
                self.value,
                token,
                gone,
                watcher,
                detach=lambda: session.expired.remove_callback(expired),
                after_term=(
                    (lambda: None)
                    if owns_session
                    else lambda: withdraw.after_term(core, session, key, candidacy)
                ),
            )
            core.events.elected(leadership, started)
            return leadership
        except BaseException:
            session.expired.remove_callback(expired)
            await core.tasks.finish(
                self._withdraw(session, key, owns_session, watcher), name="withdraw"
            )
            raise

    async def _retire_earlier_holder(self, session: Session, key: bytes) -> None:
        """Adopting a lease: delete the key an earlier process made on it, so that we join
        with a new token.

        The earlier holder may be frozen rather than dead; with the same key and token, it
        could not be told from us once it woke. Its key deleted, its fenced writes fail, its
        watch reports the loss, and systems that keep the largest token refuse its old one.
        The price: the adopted key's place in line is given up.
        """
        transport = self._core.transport
        response = await transport.call(RANGE, rpc.RangeRequest(key=key), what="adopt lease")
        if not response.kvs or response.kvs[0].lease != session.lease:
            return
        earlier = response.kvs[0].create_revision
        txn = rpc.TxnRequest(
            compare=[owns(key, earlier)],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
        )
        # Guarded by its create revision: a late apply never deletes the key we make next.
        await transport.call(TXN, txn, retry=SAFE, what="adopt lease")
        log.info(
            "adopting lease %x: deleted the earlier holder's key %s (token %d); joining with a "
            "new token",
            session.lease,
            show(key),
            earlier,
        )

    async def _join(self, session: Session, key: bytes) -> tuple[int, int]:
        """Create our key, or adopt it if it exists (a retry, or a resumed lease).

        Returns (revision at which the key is known to exist, its create revision). Resent
        after a lost answer: while the campaign lasts, a first attempt applied late finds the
        key there and changes nothing; after a withdraw it would create the key again, so an
        attempt without an answer is recorded for the withdraw (see withdraw.py).
        """
        transport = self._core.transport
        candidacy = self._candidacy = await withdraw.joining(session, key)
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

    async def _requeue(self, session: Session, key: bytes, token: int) -> tuple[int, int]:
        """Step aside for a transfer: delete our key and create it again, behind the target."""
        log.info("%s steps aside for a transfer: re-queueing", show(key))
        txn = rpc.TxnRequest(
            compare=[owns(key, token)],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
        )
        transport = self._core.transport
        response = await transport.call(TXN, txn, retry=SAFE, what="re-queue")
        if not response.succeeded:
            raise CandidateRemoved(f"candidate key {show(key)} was deleted while waiting")
        return await self._join(session, key)

    async def _wait(
        self,
        session: Session,
        key: bytes,
        token: int,
        gone: asyncio.Future[BaseException],
        since: int,
    ) -> None:
        """Wait until no key created before ours is left; fail if ours goes first.

        Go reads again after each deletion of its predecessor. This reads our key and up to
        two older ones, then follows their deletions (:class:`~geeh.win.Line`) until the win
        rule (:class:`~geeh.win.WinRule`) proves a win, or asks for a read that confirms it.
        Beside it, a transfer intent that names a candidate behind us ends the wait with
        :class:`~geeh.transfer.StepAside` (see transfer.py).
        """
        follower = IntentFollower(self._core, self.name, token, since, gone)
        try:
            await self._wait_in_line(session, key, token, follower.stopped, follower.in_line)
        finally:
            await follower.close()

    async def _wait_in_line(
        self,
        session: Session,
        key: bytes,
        token: int,
        gone: asyncio.Future[BaseException],
        in_line: Callable[[], None],
    ) -> None:
        core = self._core
        while True:
            if gone.done():
                raise gone.result()
            session.check()
            response = await core.transport.call(
                RANGE,
                rpc.RangeRequest(
                    key=self.prefix,
                    range_end=self._end,
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
                break
            in_line()
            older = [kv.key for kv in kvs[1:]]
            line = Line(
                core.watches, key, older, complete=not response.more, read=response.header.revision
            )
            with line:
                verdict = await line.wait(gone)
            if verdict is Verdict.LEAD:
                break
            if verdict is Verdict.CONFIRM:
                if await self._still_ours(key, token, line.rule.highest):
                    break
                raise CandidateRemoved(f"candidate key {show(key)} was deleted while waiting")
        # Not a win after all if the campaign ended meanwhile (Go #19597: a lease gone).
        if gone.done():
            raise gone.result()
        session.check()

    async def _still_ours(self, key: bytes, token: int, revision: int) -> bool:
        """Whether our key existed at ``revision`` (and so all along: same create revision).

        A serializable read is enough, and saves a round of consensus, when it answers from a
        state at or after ``revision``: the member we watch sent that revision's event only
        once it had applied it. After a failover to a member behind, read linearizably.
        """
        transport = self._core.transport
        for serializable in (True, False):
            response = await transport.call(
                RANGE,
                rpc.RangeRequest(key=key, keys_only=True, serializable=serializable),
                what="campaign",
            )
            if response.header.revision >= revision:
                break
        return bool(response.kvs) and response.kvs[0].create_revision == token

    async def _withdraw(
        self,
        session: Session,
        key: bytes,
        owns_session: bool,
        watcher: asyncio.Task[None] | None,
    ) -> None:
        """Remove what a failed or cancelled campaign left: its watcher, key, and own lease.

        Our own session: revoking its lease deletes the key, and a join attempt applied later
        fails ("requested lease not found"). A shared session's lease lives on: the key is
        deleted until etcd confirms it, and watched for a late join (see withdraw.py).
        """
        if watcher is not None:
            watcher.cancel()
            await asyncio.wait({watcher})
        if owns_session:
            await session.close()  # revoking the lease deletes the key with it
            return
        await withdraw.withdraw(self._core, session, key)

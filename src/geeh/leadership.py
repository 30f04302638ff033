"""Leadership: what a won campaign holds, and how it ends (resign, or loss).

A leadership ends once: by resign (reason None) or by a loss (SessionExpired,
CandidateRemoved). What is left of the candidacy is then removed: by resign at once; after a
loss or a failed resign, in the background, retrying until etcd answers, so that no ghost
key leads on once a link heals. An ``async with`` block on a leadership is cancelled when
leadership is lost, the way ``asyncio.timeout()`` cancels its block, and ends with
:class:`~geeh.LeadershipLost` (that cancellation: leadership_block.py). Every write to our
key, and every fenced write, is guarded as fencing.py says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from . import kv
from . import transfer as t
from ._proto import rpc_pb2 as rpc
from .candidates import Candidate
from .core import Core
from .errors import (
    CandidateRemoved,
    ClosedError,
    EtcdError,
    EtcdUnavailable,
    InvalidArgument,
    LeadershipLost,
    NotLeader,
    SessionExpired,
)
from .fencing import modified_at, owns
from .keys import show, to_bytes
from .leadership_block import Block
from .loss import LossSignal
from .net.retry import IF_UNSENT, SAFE, TXN, Retry
from .session import Pause, Session
from .tasks import stop

log = logging.getLogger("geeh.leadership")

# A proclaim that finds our key changed reads it and tries again; only our own earlier
# attempts, applied late, can change it, so a few rounds always suffice.
PROCLAIM_ROUNDS = 5


class Leadership:
    """Leadership of an election, from the moment it was won until resign or loss.

    ``lost`` is a :class:`~geeh.LossSignal`: awaiting it returns when leadership ends; its
    reason says why (None after :meth:`resign`). It is set within one watch event of our key
    being deleted or our lease revoked, and at the latest when the session's local deadline
    passes, which is before etcd could let anyone else lead. ``is_leader``, ``lost`` and its
    reason always agree. Guard writes made as leader with
    ``Compare(CreateRevision(key) == token)`` in the same Txn to fence out a deposed leader.

    ``async with leadership:`` (what ``async with election.campaign(...)`` does) resigns on
    exit; if leadership is lost inside the block, the block is cancelled and exits with
    :class:`~geeh.LeadershipLost`, unless ``cancel_on_loss`` is False.
    """

    def __init__(
        self,
        core: Core,
        name: bytes,
        session: Session,
        owns_session: bool,
        key: bytes,
        value: bytes,
        token: int,
        gone: asyncio.Future[BaseException],
        watcher: asyncio.Task[None],
        detach: Callable[[], None],
        after_term: Callable[[], None] = lambda: None,
    ) -> None:
        self._core = core
        self.name = name
        self.session = session
        self.key = key
        self.value = value
        self.token = token
        # Reading lost reads the session's deadline: an expiry is seen at once, not later.
        self.lost = LossSignal(poll=session.expired.is_set)
        self.cancel_on_loss = True
        self._owns_session = owns_session
        self._watcher = watcher
        self._detach = detach
        # A shared session's key is deleted: a join attempt applied late must not bring it
        # back (see withdraw.after_term). Called once the delete is confirmed.
        self._after_term = after_term
        self._resigned = False
        # During a hand-over's final Txn our key's deletion is the hand-over itself, not a
        # loss: what the watcher reports then waits for the Txn's answer (see transfer).
        self._handing_over = False
        self._deferred: BaseException | None = None
        self._written_at = token  # our key's mod revision as we last wrote it: see proclaim
        self._cleanup: asyncio.Task[None] | None = None
        self._block: Block | None = None
        core.leaderships.add(self)  # before any callback: a loss at once removes it again
        self.lost.add_callback(self._on_lost)
        session.expired.add_callback(self._on_session_end)
        gone.add_done_callback(self._on_gone)
        watcher.add_done_callback(self._on_watcher_end)

    @property
    def lease(self) -> int:
        """The lease our key is attached to."""
        return self.session.lease

    @property
    def is_leader(self) -> bool:
        """True while we lead: not lost, not resigned, and the session's deadline is ahead.

        Safe from any thread: off the event loop's it only reads (a passed deadline reads as
        lost at once; the loop signals the loss on its next step).
        """
        return not self.lost.is_set()

    # -- how it ends -------------------------------------------------------------------------

    def _on_session_end(self, reason: BaseException | None) -> None:
        self.lost.set(reason if reason is not None else SessionExpired("the session was closed"))

    def _on_gone(self, gone: asyncio.Future[BaseException]) -> None:
        if gone.cancelled():
            return
        if self._handing_over:
            self._deferred = gone.result()
            return
        self.lost.set(gone.result())

    def _on_watcher_end(self, watcher: asyncio.Task[None]) -> None:
        # A watcher that died cannot report our key's deletion: count that as a loss. Its
        # error is logged by the clean-up that awaits it.
        if not watcher.cancelled() and watcher.exception() is not None:
            self.lost.set(CandidateRemoved(f"can no longer follow candidate key {show(self.key)}"))

    def _on_lost(self, reason: BaseException | None) -> None:
        self._watcher.cancel()
        self._detach()
        self.session.expired.remove_callback(self._on_session_end)
        self._core.leaderships.discard(self)  # ended: the client's close has nothing to do
        self._core.tasks.spawn(
            stop(self._watcher, f"watch on candidate key {show(self.key)}"),
            name=f"geeh-unwatch-{self.lease:x}",
        )
        self._core.events.leadership_ended(self, reason)
        if reason is not None:
            # INFO: the caller hears of it (lost, LeadershipLost, NotLeader) and may handle it.
            log.info("leadership of %s lost: %s", show(self.name), reason)
            self._clean_up()
        if self._block is not None and reason is not None:
            self._block.interrupt()

    def _clean_up(self) -> None:
        """Remove what is left of the candidacy in the background (after a loss or a failed
        resign): the lease, if the campaign made its own, else the key."""
        if self._cleanup is not None:
            return
        work = self.session.close() if self._owns_session else self._delete_until_answered()
        self._cleanup = self._core.tasks.spawn(work, name=f"geeh-clean-up-{self.lease:x}")

    async def _delete_until_answered(self) -> None:
        pause = Pause()  # gently, as the session's revoke
        # Once the shared session ends, its own revoke takes the key with the lease.
        while self.session.alive:
            try:
                # One attempt per round, as the session's background revoke.
                await self._delete_key(self._core.transport.attempt_timeout, IF_UNSENT)
                self._after_term()
                return
            except ClosedError:
                return
            except EtcdUnavailable as err:
                log.debug("delete %s: %s; trying again", show(self.key), err)
            except EtcdError as err:
                log.warning("could not delete candidate key %s: %s", show(self.key), err)
                return
            await asyncio.sleep(pause.next())

    async def _delete_key(self, timeout: float | None, retry: Retry = SAFE) -> None:
        txn = rpc.TxnRequest(
            compare=[owns(self.key, self.token)],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self.key))],
        )
        # A late apply deletes only this very key (created at our token), never a newer one.
        await self._core.transport.call(TXN, txn, timeout=timeout, retry=retry, what="resign")

    # -- what a leader does --------------------------------------------------------------------

    async def proclaim(self, value: str | bytes) -> None:
        """Publish a new value without giving up leadership. Raises NotLeader if we don't lead.

        The write is guarded on the version of our key it replaces, so it is safe to resend:
        an attempt applied late cannot overwrite a value proclaimed after it.
        """
        data = to_bytes(value, "value")
        self._check()
        transport = self._core.transport
        # The mod revision we expect; a join that adopted its key may have left another, and
        # an earlier proclaim that failed may have been applied: the read in the failure
        # branch tells, and the next round replaces that version.
        expected = self._written_at
        for _ in range(PROCLAIM_ROUNDS):
            txn = rpc.TxnRequest(
                compare=[owns(self.key, self.token), modified_at(self.key, expected)],
                success=[
                    rpc.RequestOp(
                        request_put=rpc.PutRequest(key=self.key, value=data, lease=self.lease)
                    )
                ],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self.key))],
            )
            response = await transport.call(TXN, txn, retry=SAFE, what="proclaim")
            if response.succeeded:
                self._written_at = response.header.revision
                break
            kvs = response.responses[0].response_range.kvs
            if not kvs or kvs[0].create_revision != self.token:
                self.lost.set(CandidateRemoved(f"candidate key {show(self.key)} is gone"))
                raise NotLeader(f"leadership was lost: {self.lost.reason}")
            expected = kvs[0].mod_revision
            if kvs[0].value == data:  # an attempt of ours that looked lost was applied
                self._written_at = expected
                break
        else:
            raise EtcdError(f"proclaim: our key {show(self.key)} kept changing under us")
        self.value = data

    def _check(self) -> None:
        if self.lost.is_set():
            reason = self.lost.reason
            if self._resigned or reason is None:
                raise NotLeader("this leadership was resigned")
            raise NotLeader(f"leadership was lost: {reason}")

    async def resign(self, *, timeout: float | None = None) -> None:
        """Give up leadership: remove our key so the next candidate takes over.

        Idempotent and safe to retry: if etcd cannot be reached within ``timeout`` (default:
        the client's request timeout) the error is raised and the state kept, so calling
        again finishes the job. Meanwhile the lease is no longer kept alive and its removal
        goes on in the background: the key cannot lead on once the link heals. ``lost`` is
        set first, so nothing acts as leader while the request is in flight.
        """
        if self._resigned:
            return
        self.lost.set(None)  # a loss already known (a passed deadline too) stays the reason
        try:
            if self._owns_session:
                # One commit: revoking the campaign's own lease deletes our key with it, and
                # the successor's read does not queue behind a second commit.
                await self.session.revoke(timeout=timeout)
            else:
                await self._delete_key(timeout)
        except BaseException:  # an error or a cancellation: no ghost either way
            self._clean_up()
            raise
        self._resigned = True
        if self._owns_session:
            await self.session.close(revoke=False)
        else:
            self._after_term()

    async def transfer(
        self,
        to: str | bytes,
        *,
        timeout: float = 5.0,
        before_hand_over: Callable[[], Awaitable[object]] | None = None,
    ) -> Candidate:
        """Hand leadership to the waiting candidate ``to`` (its key, or its unique value).

        Candidates ahead of it step aside (gee-h ones re-queue behind it; see
        docs/concepts/transfer.md); once it is next in line, our key is deleted in a Txn that
        checks it is still there, and it leads next. Returns the new leader. If that cannot
        happen within ``timeout`` seconds (it left, or a candidate ahead does not step aside:
        ``etcdctl elect``, Go), raises :class:`~geeh.TransferFailed` and we lead on.
        ``before_hand_over`` is awaited just before the hand-over: stop the work there.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._check()
        target = await t.read_target(self._core, self.name, to, self.key)
        holder = t.Holder(self.key, self.token, self.lease)

        async def last_step() -> None:
            if before_hand_over is not None:
                await before_hand_over()
            self._check()
            self._handing_over = True

        try:
            await t.hand_over(self._core, self.name, holder, target, timeout, last_step)
        except t.HolderGone:
            self.lost.set(CandidateRemoved(f"candidate key {show(self.key)} is gone"))
            raise NotLeader(f"leadership was lost: {self.lost.reason}") from None
        except BaseException:
            if self._deferred is not None:
                self.lost.set(self._deferred)
            raise
        finally:
            self._handing_over = False
        self.lost.set(None)
        self._resigned = True
        if self._owns_session:
            await self.session.close()
        return target

    async def aclose(self) -> None:
        """The client is closing: resign, quietly and within bounds."""
        try:
            await self.resign(timeout=2.0)
        except Exception as err:
            log.warning("resign of %s on close failed: %s", show(self.name), err)
        await stop(self._watcher)

    # -- fenced writes: only while we lead ----------------------------------------------------

    async def put(self, key: kv.Bytes, value: kv.Bytes) -> int:
        """Write ``value`` to ``key`` if we still lead; returns the revision of the write.

        The write and the fencing guard (our key still created at :attr:`token`) go in one
        Txn: if leadership has moved on, :class:`~geeh.NotLeader` is raised and nothing is
        written, however late the request reaches etcd. Keys under the election's own prefix
        are refused (InvalidArgument): a key there without a lease would block the election.
        """
        return (await self._fenced([kv.put(key, value)])).revision

    async def delete(self, key: kv.Bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it) if we still lead; returns the revision."""
        return (await self._fenced([kv.delete(key, prefix=prefix)])).revision

    async def txn(
        self,
        compares: Sequence[kv.Compare],
        success: Sequence[kv.Op],
        failure: Sequence[kv.Op] = (),
    ) -> kv.TxnResult:
        """A Txn that runs only if we still lead (else NotLeader, nothing done).

        Inside the fence it is an ordinary Txn: ``success`` if every compare holds, else
        ``failure``; the result says which ran.
        """
        result: kv.TxnResult = await self._fenced([kv.txn(compares, success, failure)])
        inner: kv.TxnResult = result.responses[0]
        return inner

    async def _fenced(self, ops: Sequence[kv.Op]) -> kv.TxnResult:
        kv.refuse_under(self.name + b"/", ops)
        self._check()
        guard = kv.Compare(owns(self.key, self.token))
        result = await kv.KV(self._core.transport).txn([guard], ops, what="fenced write")
        if not result.succeeded:
            self.lost.set(CandidateRemoved(f"candidate key {show(self.key)} is gone"))
            raise NotLeader(f"not leader of {show(self.name)} any more: nothing was written")
        return result

    # -- the leadership block ------------------------------------------------------------------

    async def __aenter__(self) -> Leadership:
        if self.lost.is_set():
            reason = self.lost.reason
            if reason is None:
                raise NotLeader("this leadership was resigned")
            raise LeadershipLost(reason)
        task = asyncio.current_task()
        if self.cancel_on_loss and task is not None:
            self._block = Block(task)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        block, self._block = self._block, None
        interrupted = False
        try:
            interrupted = block is not None and await block.exit(exc_type)
        finally:
            if not self.lost.is_set() or self.lost.reason is None:
                try:
                    await self.resign()
                except Exception as err:
                    if exc_type is None:
                        raise
                    # Not to hide the block's own exception; the removal goes on regardless.
                    log.warning("resign of %s on leaving a block failed: %s", show(self.name), err)
        if interrupted:
            reason = self.lost.reason
            assert reason is not None
            raise LeadershipLost(reason) from exc

    def __repr__(self) -> str:
        state = "leading" if self.is_leader else "ended"
        return f"<Leadership {self.key!r} token={self.token} {state}>"

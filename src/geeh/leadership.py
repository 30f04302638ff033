"""Leadership: what a won campaign holds, and how it ends (resign, or loss)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from . import kv
from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import CandidateRemoved, EtcdError, NotLeader
from .keys import show, to_bytes
from .loss import LossSignal
from .net.retry import SAFE, TXN
from .session import Session

log = logging.getLogger("geeh.leadership")

# A proclaim that finds our key changed reads it and tries again; only our own earlier
# attempts, applied late, can change it, so a few rounds always suffice.
PROCLAIM_ROUNDS = 5


def owns(key: bytes, token: int) -> rpc.Compare:
    """The fencing guard: true while ``key`` is still the one created at revision ``token``."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=token
    )


def modified_at(key: bytes, revision: int) -> rpc.Compare:
    """True while ``key`` was last written at ``revision``: guards a write against a newer one."""
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )


class Leadership:
    """Leadership of an election, from the moment it was won until resign or loss.

    ``lost`` is a :class:`~geeh.LossSignal`: awaiting it returns when leadership ends; its
    reason says why (None after :meth:`resign`). It is set within one watch event of our key
    being deleted or our lease revoked, and at the latest when the session's local deadline
    passes, which is before etcd could let anyone else lead. Guard writes made as leader with
    ``Compare(CreateRevision(key) == token)`` in the same Txn to fence out a deposed leader.
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
    ) -> None:
        self._core = core
        self.name = name
        self.session = session
        self.key = key
        self.value = value
        self.token = token
        self.lost = LossSignal()
        self._owns_session = owns_session
        self._watcher = watcher
        self._detach = detach
        self._resigned = False
        self._written_at = token  # our key's mod revision as we last wrote it: see proclaim
        gone.add_done_callback(self._on_gone)
        self.lost.add_callback(self._on_lost)

    @property
    def lease(self) -> int:
        """The lease our key is attached to."""
        return self.session.lease

    @property
    def is_leader(self) -> bool:
        """True while we lead: not lost, not resigned, and the session's deadline is ahead."""
        return not self.lost.is_set() and self.session.alive

    def _on_gone(self, gone: asyncio.Future[BaseException]) -> None:
        if not gone.cancelled():
            self.lost.set(gone.result())

    def _on_lost(self, reason: BaseException | None) -> None:
        self._watcher.cancel()
        self._detach()
        self._core.events.leadership_ended(self, reason)
        if reason is not None:
            log.warning("leadership of %s lost: %s", show(self.name), reason)
            self._core.tasks.spawn(self._clear(), name=f"geeh-clear-{self.lease:x}")

    async def _clear(self) -> None:
        """After a loss, remove what is left of our candidacy: quietly, within bounds."""
        with contextlib.suppress(Exception):
            if self._owns_session:
                await self.session.close()  # nobody will use this lease again
            else:
                await self._delete_key(timeout=2.0)

    async def _delete_key(self, timeout: float | None) -> None:
        txn = rpc.TxnRequest(
            compare=[owns(self.key, self.token)],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self.key))],
        )
        # A late apply deletes only this very key (created at our token), never a newer one.
        await self._core.transport.call(TXN, txn, timeout=timeout, retry=SAFE, what="resign")

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
        if self._resigned:
            raise NotLeader("this leadership was resigned")
        if self.lost.is_set():
            raise NotLeader(f"leadership was lost: {self.lost.reason}")
        self.session.check()

    async def resign(self, *, timeout: float | None = None) -> None:
        """Give up leadership: remove our key so the next candidate takes over.

        Idempotent and safe to retry: if etcd cannot be reached within ``timeout`` (default:
        the client's request timeout) the error is raised and the state kept, so calling
        again finishes the job. ``lost`` is set first, so nothing acts as leader while the
        request is in flight.
        """
        if self._resigned:
            return
        self.lost.set(None)
        if self._owns_session:
            # One commit: revoking the campaign's own lease deletes our key with it, and the
            # successor's read does not queue behind a second commit.
            await self.session.revoke(timeout=timeout)
        else:
            await self._delete_key(timeout)
        self._resigned = True
        self._core.leaderships.discard(self)
        if self._owns_session:
            await self.session.close(revoke=False)

    async def aclose(self) -> None:
        """The client is closing: resign, quietly and within bounds."""
        with contextlib.suppress(Exception):
            await self.resign(timeout=2.0)
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher

    # -- fenced writes: only while we lead ----------------------------------------------------

    async def put(self, key: kv.Bytes, value: kv.Bytes) -> int:
        """Write ``value`` to ``key`` if we still lead; returns the revision of the write.

        The write and the fencing guard (our key still created at :attr:`token`) go in one
        Txn: if leadership has moved on, :class:`~geeh.NotLeader` is raised and nothing is
        written, however late the request reaches etcd.
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
        self._check()
        guard = kv.Compare(owns(self.key, self.token))
        result = await kv.KV(self._core.transport).txn([guard], ops, what="fenced write")
        if not result.succeeded:
            self.lost.set(CandidateRemoved(f"candidate key {show(self.key)} is gone"))
            raise NotLeader(f"not leader of {show(self.name)} any more: nothing was written")
        return result

    async def __aenter__(self) -> Leadership:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.resign()

    def __repr__(self) -> str:
        state = "leading" if self.is_leader else "ended"
        return f"<Leadership {self.key!r} token={self.token} {state}>"

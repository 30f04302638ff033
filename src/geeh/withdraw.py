"""Withdrawing a candidate that shares its session: the key must go, and stay gone.

A campaign that fails or is cancelled removes its key (Go #21128). With a session of its own
that is one revoke, and a join attempt that etcd applies later fails ("requested lease not
found"). A shared session's lease lives on, though, and two things could leave an orphan key
that later leads:

- the delete is not confirmed (etcd unreachable): it goes on in the background, under the
  client's task owner, until etcd answers, the session ends, or the client closes;
- a join attempt whose answer was lost is applied after the delete and creates the key
  again. When any join attempt's outcome is unknown, the key is watched from the delete on
  and deleted again if it reappears, until the session ends or a new campaign of the same
  session takes the key over. A campaign that won gets the same guard once its leadership
  ends (resign or loss): the late attempt can land after that too (``after_term``).

Every delete is guarded by the create revision of the key it means, so one applied late can
never remove a newer key.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import TypeVar

from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import ClosedError, Compacted, EtcdUnavailable
from .fencing import owns
from .keys import show
from .net.retry import RANGE, SAFE, TXN, Backoff
from .session import Session

log = logging.getLogger("geeh.election")

T = TypeVar("T")
NODELETE = rpc.WatchCreateRequest.NODELETE


class Candidacy:
    """What one campaign of a shared session did with its key, for its withdrawal."""

    def __init__(self) -> None:
        self.joining = True  # no withdrawal yet
        self.token = 0  # the key's create revision once the join was answered; 0: unknown
        self.uncertain = False  # a join attempt may still be applied: its answer never came
        self.task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sending = False

    def attempt_lost(self) -> None:
        """A join attempt may have reached etcd without an answer (Transport.call's hook)."""
        self.uncertain = True

    async def stop(self) -> None:
        """Stop the background withdrawal; a request in flight is awaited, not cut off."""
        task = self.task
        if task is None or task.done():
            return
        self._stopping = True
        if not self._sending:
            task.cancel()
        await asyncio.wait({task})

    async def _send(self, aw: Awaitable[T]) -> T:
        """Await a request to its end: one cut off in flight could be applied out of sight."""
        self._sending = True
        try:
            return await aw
        finally:
            self._sending = False


_candidacies: weakref.WeakKeyDictionary[Session, dict[bytes, Candidacy]] = (
    weakref.WeakKeyDictionary()
)


async def joining(session: Session, key: bytes) -> Candidacy:
    """A campaign is about to join with ``key``: stop what an earlier one's withdrawal of the
    same key still does (it would delete the new key), and start a fresh record."""
    table = _candidacies.setdefault(session, {})
    earlier = table.get(key)
    if earlier is not None:
        await earlier.stop()
    table[key] = Candidacy()
    return table[key]


async def withdraw(core: Core, session: Session, key: bytes) -> None:
    """Delete the key a campaign of shared ``session`` made; see the module's docstring.

    The first attempt runs in the caller's time; if etcd does not confirm it, or a late join
    is possible, the rest goes on in the background.
    """
    candidacy = _candidacies.get(session, {}).get(key)
    if candidacy is None or not candidacy.joining:
        return  # the join was never sent: nothing to take back
    candidacy.joining = False
    revision: int | None = None
    try:
        revision = await _remove(core, session, key, candidacy.token)
    except EtcdUnavailable:
        pass
    except ClosedError:
        return  # the client is closing: it revokes the session's lease
    if revision is not None and not candidacy.uncertain:
        return
    if revision is None:
        log.warning("withdrawing %s: etcd did not answer; retrying in the background", show(key))
    _guard(core, session, key, candidacy, revision)


def after_term(core: Core, session: Session, key: bytes, candidacy: Candidacy | None) -> None:
    """A leadership of shared ``session`` ended (resign or loss) and its key was deleted.

    If a join attempt of its campaign (``candidacy``) went unanswered, it may still be applied
    and create the key again on the live lease, where it would lead with no one behind it:
    give the key the guard a withdrawn campaign gets (delete, watch, delete again). Not if a
    newer campaign of the session has taken the key over since: the key is its own.
    """
    if candidacy is None or _candidacies.get(session, {}).get(key) is not candidacy:
        return
    if not candidacy.joining or not candidacy.uncertain:
        return
    candidacy.joining = False
    _guard(core, session, key, candidacy, None)


def _guard(
    core: Core, session: Session, key: bytes, candidacy: Candidacy, revision: int | None
) -> None:
    """Delete the key (unless known gone at ``revision``), then watch for a late join."""
    task = core.tasks.spawn(
        _background(core, session, key, candidacy, revision),
        name=f"geeh-withdraw-{session.lease:x}",
    )
    candidacy.task = task

    def session_ended(reason: BaseException | None) -> None:
        task.cancel()  # the lease is gone, or going: a late join can no longer create the key

    session.expired.add_callback(session_ended)
    task.add_done_callback(lambda _: session.expired.remove_callback(session_ended))


async def _background(
    core: Core, session: Session, key: bytes, candidacy: Candidacy, revision: int | None
) -> None:
    backoff = Backoff(base=0.1, cap=2.0)
    token = candidacy.token
    while not candidacy._stopping:
        if revision is None:
            try:
                revision = await candidacy._send(_remove(core, session, key, token))
            except EtcdUnavailable as err:
                log.debug("withdrawing %s: %s", show(key), err)
                await asyncio.sleep(backoff.next_delay())
                continue
            except ClosedError:
                return
            backoff.reset()
            log.info("withdrew %s", show(key))
        if not candidacy.uncertain or candidacy._stopping:
            return
        try:
            token = await _recreated(core, session, key, revision)
        except EtcdUnavailable as err:
            log.debug("watching for a late join of %s: %s", show(key), err)
            await asyncio.sleep(backoff.next_delay())
            continue
        except ClosedError:
            return
        log.warning("a join of %s applied late created it again; deleting it", show(key))
        revision = None


async def _remove(core: Core, session: Session, key: bytes, token: int) -> int:
    """Delete our key if it is ours (created at ``token``, or any key on our lease when the
    token is 0 or outdated); return the revision from which it is known gone."""
    transport = core.transport
    while True:
        txn = rpc.TxnRequest(
            compare=[owns(key, token)],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        # A late apply deletes only the key created at ``token``, never a newer one.
        response = await transport.call(TXN, txn, retry=SAFE, what="withdraw candidate")
        if response.succeeded:
            return response.header.revision
        kvs = response.responses[0].response_range.kvs
        if not kvs or kvs[0].lease != session.lease:
            return response.header.revision  # gone, or not ours
        token = kvs[0].create_revision  # ours, created again (by a join applied late)


async def _recreated(core: Core, session: Session, key: bytes, revision: int) -> int:
    """Wait until our key is created again after ``revision``; return its create revision."""
    while True:
        with core.watches.watch(key, start_revision=revision + 1, filters=[NODELETE]) as w:
            try:
                while True:
                    batch = await w.next()
                    for event in batch.events:
                        if event.kv.lease == session.lease:
                            return event.kv.create_revision
            except Compacted:
                pass
        # The history is gone: read the key, then watch from the read on.
        response = await core.transport.call(
            RANGE, rpc.RangeRequest(key=key), what="withdraw candidate"
        )
        kvs = response.kvs
        if kvs and kvs[0].lease == session.lease:
            return kvs[0].create_revision
        revision = response.header.revision

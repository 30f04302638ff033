"""Hand-over to a chosen candidate: the leader's side and the waiting candidates' side.

etcd's recipe orders candidates by create revision, so only the next in line can follow a
leader that resigns. To hand leadership to a candidate further back (the *target*), the ones
ahead of it must step aside first (docs/concepts/transfer.md):

1. the leader writes a *transfer intent* (``<name>.transfer``, on its own lease, guarded by
   its fencing token) naming the target's key and create revision;
2. every gee-h candidate waits with a watch on that key; one created before the target
   *re-queues*: it deletes its key and creates it again, so it now stands behind the target;
3. once nothing but the leader's key is older than the target, the leader deletes its key in a
   Txn that also checks the target is still there: the target leads next;
4. if that does not happen within the timeout (a candidate ahead that does not step aside,
   such as ``etcdctl elect``), or the target's key goes, the transfer fails with
   :class:`TransferFailed`, the intent is removed and the old leader leads on.

Safety needs nothing new: a re-queue and the final resign only ever delete the caller's own
key, and the recipe gives at most one leader whatever keys go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ._proto import rpc_pb2 as rpc
from .candidates import Candidate, read_candidates
from .core import Core
from .errors import (
    ClosedError,
    Compacted,
    ElectionError,
    EtcdError,
    InvalidArgument,
    TransferFailed,
)
from .fencing import modified_at, owns
from .keys import election_prefix, prefix_end, show, to_bytes
from .net.retry import RANGE, SAFE, TXN
from .tasks import failed, stop

log = logging.getLogger("geeh.transfer")

NODELETE = rpc.WatchCreateRequest.NODELETE

DEFAULT_TIMEOUT = 5.0


class HolderGone(TransferFailed):
    """The leader's key went during the transfer: it no longer leads."""


class Holder(NamedTuple):
    """The leader a transfer starts from: its key, fencing token and lease."""

    key: bytes
    token: int
    lease: int


class StepAside(ElectionError):
    """A waiting candidate stands ahead of a transfer's target: it must re-queue."""


def intent_key(name: bytes) -> bytes:
    """Where the leader of election ``name`` announces a transfer: next to, not under, its
    prefix (a key under the prefix would count as a candidate)."""
    return name + b".transfer"


def encode(target: Candidate) -> bytes:
    return b"%d %s" % (target.token, target.key)


def decode(data: bytes) -> tuple[int, bytes] | None:
    """(target's create revision, target's key), or None for a value that is not an intent."""
    revision, _, key = data.partition(b" ")
    try:
        return int(revision), key
    except ValueError:
        return None


def pick(candidates: list[Candidate], to: str | bytes, own_key: bytes) -> Candidate:
    """The waiting candidate ``to`` names: its key, or else its value (which must be unique)."""
    wanted = to_bytes(to, "transfer target")
    if not wanted:
        raise InvalidArgument("transfer target must not be empty")
    if wanted == own_key:
        raise InvalidArgument("cannot transfer leadership to ourselves")
    waiting = [c for c in candidates if c.key != own_key]
    by_key = [c for c in waiting if c.key == wanted]
    if by_key:
        return by_key[0]
    by_value = [c for c in waiting if c.value == wanted]
    if len(by_value) > 1:
        raise InvalidArgument(
            f"{len(by_value)} candidates have value {show(wanted)}: name one by its key"
        )
    if not by_value:
        raise TransferFailed(f"no waiting candidate has key or value {show(wanted)}")
    return by_value[0]


async def wait_until_next(
    core: Core, name: bytes, own_key: bytes, target: Candidate, timeout: float
) -> None:
    """Return once the leader's key is the only one older than ``target``'s; else fail.

    Keys older than the target never come back (create revisions only grow), so once none is
    left but ours, the target is next in line for good.
    """
    prefix = election_prefix(name)
    end = prefix_end(prefix)
    request = rpc.RangeRequest(
        key=prefix,
        range_end=end,
        max_create_revision=target.token,
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
        keys_only=True,
    )
    ahead: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                response = await core.transport.call(RANGE, request, what="transfer")
                keys = {kv.key: kv.create_revision for kv in response.kvs}
                if keys.get(target.key) != target.token:
                    raise TransferFailed(f"target {show(target.key)} left the election")
                if own_key not in keys:
                    raise HolderGone("leadership ended during the transfer")
                ahead = [k for k in keys if k not in (own_key, target.key)]
                if not ahead:
                    return
                start = response.header.revision + 1
                with (
                    core.watches.watch(prefix, range_end=end, start_revision=start) as watch,
                    contextlib.suppress(Compacted),
                ):
                    await watch.next()  # a change in line: read again
    except TimeoutError:
        shown = ", ".join(show(k) for k in ahead) or "none"
        raise TransferFailed(
            f"candidates ahead of {show(target.key)} did not step aside within {timeout:g}s "
            f"(not gee-h candidates, such as etcdctl elect or Go?): {shown}; "
            "leadership stays with the current leader"
        ) from None


def _delete(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


async def hand_over(
    core: Core,
    name: bytes,
    holder: Holder,
    target: Candidate,
    timeout: float,
    before: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The leader's side: announce, wait until the target is next, delete the leader's key.

    Raises :class:`TransferFailed` (the holder leads on, the intent is removed), or
    :class:`HolderGone` if the holder's key went meanwhile. ``before`` is awaited just
    before the hand-over.
    """
    intent = intent_key(name)
    put = rpc.PutRequest(key=intent, value=encode(target), lease=holder.lease)
    announce = rpc.TxnRequest(
        compare=[owns(holder.key, holder.token)], success=[rpc.RequestOp(request_put=put)]
    )
    transport = core.transport
    try:
        response = await transport.call(TXN, announce, retry=SAFE, what="transfer")
    except EtcdError as err:
        if err.code != "PERMISSION_DENIED":
            raise
        raise TransferFailed(
            f"may not write the transfer intent {show(intent)}: grant readwrite on it too "
            "(etcdctl role grant-permission --prefix ROLE readwrite NAME covers both)"
        ) from None
    if not response.succeeded:
        raise HolderGone(f"leader key {show(holder.key)} is gone")
    announced = response.header.revision
    handed = False
    try:
        await wait_until_next(core, name, holder.key, target, timeout)
        if before is not None:
            await before()
        # Our key goes only if the target is still there to follow it: else we lead on.
        txn = rpc.TxnRequest(
            compare=[owns(holder.key, holder.token), owns(target.key, target.token)],
            success=[_delete(holder.key), _delete(intent)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=holder.key))],
        )
        response = await transport.call(TXN, txn, retry=SAFE, what="transfer")
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            if not kvs or kvs[0].create_revision != holder.token:
                raise HolderGone(f"leader key {show(holder.key)} is gone")
            raise TransferFailed(f"target {show(target.key)} left the election")
        handed = True
    finally:
        if not handed:
            await _withdraw_intent(core, intent, announced)


async def _withdraw_intent(core: Core, intent: bytes, revision: int) -> None:
    """Remove the transfer intent written at ``revision`` (not a newer one)."""
    txn = rpc.TxnRequest(
        compare=[modified_at(intent, revision)],
        success=[_delete(intent)],
    )
    try:
        await core.transport.call(TXN, txn, retry=SAFE, what="transfer")
    except Exception as err:  # it goes with the leader's lease at the latest
        log.warning("could not remove transfer intent %s: %s", show(intent), err)


async def read_target(core: Core, name: bytes, to: str | bytes, own_key: bytes) -> Candidate:
    prefix = election_prefix(name)
    queue = await read_candidates(core, prefix, prefix_end(prefix), ttl=False)
    return pick(queue.candidates, to, own_key)


async def await_intent(core: Core, name: bytes, token: int, since: int) -> None:
    """Return when a transfer intent names a target created after ``token``: we stand ahead.

    A waiting candidate runs this beside its wait. It never fails: if the intent cannot be
    followed (no permission outside the election's prefix, say) it waits on quietly, as a
    candidate that does not step aside, and the transfer reports that.
    """
    key = intent_key(name)
    revision = since
    checked = core.transport.auth is None  # without auth, every key is readable
    while True:
        try:
            if not checked:
                if not await _readable(core, key):
                    await asyncio.Future()  # never told: a candidate that does not step aside
                checked = True
            if revision == 0:
                response = await core.transport.call(
                    RANGE, rpc.RangeRequest(key=key), what="transfer intent"
                )
                revision = response.header.revision
                if response.kvs and _ahead_of(response.kvs[0].value, token):
                    return
            with core.watches.watch(key, start_revision=revision + 1, filters=[NODELETE]) as w:
                while True:
                    batch = await w.next()
                    if any(_ahead_of(e.kv.value, token) for e in batch.events):
                        return
        except Compacted:
            revision = 0
        except ClosedError:
            await asyncio.Future()  # the campaign ends with the client: wait for that
        except EtcdError as err:
            log.debug("cannot follow transfer intent %s: %s", show(key), err)
            await asyncio.Future()


class IntentFollower:
    """Beside a waiting campaign: ``stopped`` gets the campaign's end (from ``gone``), or a
    :class:`StepAside` once a transfer intent names a candidate behind us.

    The intent is followed only from :meth:`in_line` on (someone is ahead of us): a
    candidate that wins at once, as most of a sharded member's do, costs no watch. The watch
    starts at ``since``, so an intent written meanwhile is not missed.
    """

    def __init__(
        self,
        core: Core,
        name: bytes,
        token: int,
        since: int,
        gone: asyncio.Future[BaseException],
    ) -> None:
        self._core, self._name, self._token, self._since = core, name, token, since
        self._gone = gone
        self._task: asyncio.Task[None] | None = None
        self.stopped: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        gone.add_done_callback(self._relay)

    def in_line(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                await_intent(self._core, self._name, self._token, self._since),
                name=f"geeh-transfer-intent-{self._token}",
            )
            self._task.add_done_callback(self._relay)

    def _relay(self, done: asyncio.Future[Any]) -> None:
        if self.stopped.done() or done.cancelled():
            return
        if done is self._task:
            if not failed(self._task, "transfer intent watch"):
                self.stopped.set_result(StepAside("a transfer names a candidate behind us"))
        else:
            self.stopped.set_result(done.result())

    async def close(self) -> None:
        self._gone.remove_done_callback(self._relay)
        if self._task is not None:
            self._task.remove_done_callback(self._relay)
            await stop(self._task, "transfer intent watch")


# Per client, whether its user may read each intent key (see _readable).
_readable_keys: weakref.WeakKeyDictionary[Core, dict[bytes, bool]] = weakref.WeakKeyDictionary()


async def _readable(core: Core, key: bytes) -> bool:
    """Whether this client's user may read ``key``; asked once per client and key.

    Why ask: etcd refuses a watch the user may not read by cancelling it as "permission
    denied", which the watch stream takes for an expired token and re-opens, over and over,
    starving every other watch on it. A read refused is just an error.
    """
    known = _readable_keys.setdefault(core, {})
    if key not in known:
        try:
            await core.transport.call(
                RANGE, rpc.RangeRequest(key=key, count_only=True), what="transfer intent"
            )
            known[key] = True
        except EtcdError as err:
            if err.code != "PERMISSION_DENIED":
                raise
            log.debug("%s is not readable: candidates here will not step aside", show(key))
            known[key] = False
    return known[key]


def _ahead_of(data: bytes, token: int) -> bool:
    intent = decode(data)
    return intent is not None and token < intent[0]


async def transfer_leader(
    core: Core, name: bytes, to: str | bytes, timeout: float
) -> tuple[Candidate, Candidate]:
    """Hand the leadership of ``name`` to ``to`` from outside (``geeh transfer``).

    Does what the leader's own :meth:`~geeh.Leadership.transfer` does, on its behalf: the
    intent goes on the leader's lease, and at the end the leader's key is deleted, which the
    leader sees as a loss (its work is stopped as on any deletion of its key). Returns (the
    old leader, the new one).
    """
    prefix = election_prefix(name)
    queue = await read_candidates(core, prefix, prefix_end(prefix), ttl=False)
    if not queue.candidates:
        raise TransferFailed(f"election {show(name)} has no leader")
    leader = queue.candidates[0]
    target = pick(queue.candidates, to, leader.key)
    holder = Holder(leader.key, leader.token, leader.lease)
    try:
        await hand_over(core, name, holder, target, timeout)
    except HolderGone:
        raise TransferFailed(
            f"the leader {show(leader.key)} left during the transfer; nothing was handed over"
        ) from None
    return leader, target

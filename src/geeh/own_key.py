"""The watcher on a candidate's own key: it reports the key's deletion, or that it cannot tell.

A campaign starts it as soon as its key exists, and hands it to the Leadership it wins. It
resolves the campaign's ``gone`` future when the key is deleted (or its lease revoked); a
compaction is routine here and is met with a read, an outage with retries. If the watch
fails for good, the candidacy ends with CandidateRemoved: we can no longer tell, so we
withdraw.
"""

from __future__ import annotations

import asyncio
import logging

from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import CandidateRemoved, ClosedError, Compacted, EtcdUnavailable
from .keys import show
from .net.retry import RANGE, Backoff
from .watch import NOPUT, Watch

log = logging.getLogger("geeh.election")


async def watch_own_key(
    core: Core, key: bytes, token: int, revision: int, gone: asyncio.Future[BaseException]
) -> None:
    """Resolve ``gone`` when our key is deleted, or when we can no longer tell.

    The owner of this task sees any end of it through ``gone``: a watcher that failed (a
    refusal from etcd, a broken watch stream, a bug) ends the campaign or leadership with
    CandidateRemoved, the candidacy being withdrawn as if removed. Only the client's close
    (or cancelling the task) ends it quietly.
    """
    try:
        await _follow_own_key(core, key, token, revision)
        reason: BaseException = CandidateRemoved(
            f"candidate key {show(key)} was deleted (or its lease revoked)"
        )
    except asyncio.CancelledError:
        raise
    except Exception as err:
        if isinstance(err, ClosedError) and core.closed:
            return
        log.error("watching candidate key %s failed: %r", show(key), err)
        reason = CandidateRemoved(
            f"candidate key {show(key)}: its watch failed ({err}); the candidacy is "
            "withdrawn, as if removed"
        )
    if not gone.done():
        gone.set_result(reason)


async def _follow_own_key(core: Core, key: bytes, token: int, revision: int) -> None:
    """Return when our key is deleted; re-read after compaction, retrying outages."""
    backoff = Backoff(base=0.1, cap=2.0)
    while True:
        with core.watches.watch(key, start_revision=revision + 1, filters=[NOPUT]) as own:
            try:
                await _next_delete(own)
                return
            except Compacted:
                pass
        # Compaction is routine here: this watch filters PUTs out, so its next revision
        # never advances, and any reconnect after a compaction finds it compacted.
        while True:
            try:
                response = await core.transport.call(
                    RANGE, rpc.RangeRequest(key=key, keys_only=True), what="campaign"
                )
                break
            except EtcdUnavailable as err:
                # While etcd cannot be read it cannot be watched either; the session's
                # deadline bounds how long we may trust the lease meanwhile.
                level = logging.INFO if backoff.attempt == 0 else logging.DEBUG
                log.log(level, "re-reading candidate key %s: %s; retrying", show(key), err)
                await asyncio.sleep(backoff.next_delay())
        backoff.reset()
        if not response.kvs or response.kvs[0].create_revision != token:
            return
        revision = response.header.revision


async def _next_delete(w: Watch) -> None:
    while True:
        batch = await w.next()
        if any(e.type == e.DELETE for e in batch.events):
            return

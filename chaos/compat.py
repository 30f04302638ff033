"""Adapters for the gee-h API the workers need, until gee-h has it.

Each adapter is one function, to be replaced by one call once the API lands:

- ADAPTER 1, :func:`run_as_leader`:
  ``await election.run(work, value, ttl=ttl, on_elected=on_elected, on_lost=on_lost)``
- ADAPTER 2, :func:`fenced_put`: ``await leadership.put(key, value)``
- ADAPTER 3, :func:`unfenced_put` (the broken worker only): ``await client.put(key, value)``

Until then they reach into the client's transport, as gee-h's own proclaim does.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import geeh
from geeh._proto import rpc_pb2 as rpc
from geeh.failover import Transport, Unary
from geeh.leadership import owns

log = logging.getLogger("chaos.compat")

Work = Callable[[geeh.Leadership], Awaitable[None]]
Hook = Callable[[geeh.Leadership], None]

# A put is not repeatable: a retry after a lost response could apply it twice. So this Txn
# is sent once (gee-h's own TXN is repeatable, which suits its compare-and-swap campaign Txns).
_WRITE_TXN = Unary[rpc.TxnRequest, rpc.TxnResponse]("/etcdserverpb.KV/Txn", rpc.TxnResponse, False)


def _jitter() -> float:
    return random.uniform(0.05, 0.5)


def _call_hook(hook: Hook, leadership: geeh.Leadership) -> None:
    try:
        hook(leadership)
    except Exception:
        log.exception("callback %r failed", hook)


async def run_as_leader(
    election: geeh.Election,
    work: Work,
    value: str,
    *,
    ttl: int,
    on_elected: Hook,
    on_lost: Hook,
) -> None:
    """ADAPTER 1: campaign; while leader run ``work(leadership)``; on loss cancel it; repeat.

    Runs until cancelled; it then resigns if it leads (and the client's close withdraws a
    campaign). A ``work`` that returns also ends the term: resign, campaign again.
    """
    while True:
        try:
            leadership = await election.campaign(value, ttl=ttl)
        except geeh.GeehError as err:
            log.warning("campaign failed: %s", err)
            await asyncio.sleep(_jitter())
            continue
        _call_hook(on_elected, leadership)
        task = asyncio.ensure_future(work(leadership))
        lost = asyncio.ensure_future(leadership.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            task.cancel()
            await asyncio.wait({task})  # a work that ignores cancellation is waited for
            if not task.cancelled() and task.exception() is not None:
                log.error("work failed: %r", task.exception())
            _call_hook(on_lost, leadership)
            await _resign(leadership)
        await asyncio.sleep(_jitter())


async def _resign(leadership: geeh.Leadership) -> None:
    """Resign until it succeeds: a key left behind with a live lease would block everyone.

    When stopping (cancelled), one bounded attempt: the client's close tries again.
    """
    stopping = bool(current.cancelling()) if (current := asyncio.current_task()) else False
    while True:
        try:
            await leadership.resign(timeout=2.0)
            return
        except geeh.GeehError as err:
            if stopping:
                return
            log.warning("resign failed, retrying: %s", err)
            await asyncio.sleep(_jitter())


async def fenced_put(leadership: geeh.Leadership, key: bytes, value: bytes) -> int:
    """ADAPTER 2: put ``key`` only while our leader key still carries our token.

    Returns the revision; raises :class:`geeh.NotLeader`, with nothing written, if the guard
    ``CreateRevision(leadership.key) == leadership.token`` fails.
    """
    txn = rpc.TxnRequest(
        compare=[owns(leadership.key, leadership.token)],
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
    )
    response = await _transport(leadership).call(_WRITE_TXN, txn, what="fenced put")
    if not response.succeeded:
        raise geeh.NotLeader(f"fenced put rejected: token {leadership.token} no longer leads")
    return response.header.revision


async def unfenced_put(leadership: geeh.Leadership, key: bytes, value: bytes) -> int:
    """ADAPTER 3: a plain put, no guard (what the broken worker does). Returns the revision."""
    txn = rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))])
    response = await _transport(leadership).call(_WRITE_TXN, txn, what="put")
    return response.header.revision


def _transport(leadership: geeh.Leadership) -> Transport:
    return leadership.election._client._transport

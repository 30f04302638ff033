"""The queue of an election: every candidate in line, with its lease's time left.

etcd's election recipe keeps the queue implicit (keys ordered by create revision); this reads
it whole, and asks etcd how long each candidate's lease has left (LeaseTimeToLive), which
``etcdctl`` cannot show. :func:`follow_candidates` re-reads it whenever it changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ._proto import rpc_pb2 as rpc
from .core import Core
from .errors import ClosedError, Compacted
from .keys import show
from .leader import Leader
from .net.retry import LEASE_TTL, RANGE


@dataclass(frozen=True, slots=True)
class Candidate(Leader):
    """A candidate in an election's line: a :class:`~geeh.Leader` with its place and time left.

    ``position`` counts the candidates ahead: 0 is the leader. ``ttl`` is the seconds left
    on its lease when read (etcd's LeaseTimeToLive; -1 if the lease is gone and the key about
    to be), or None for a key with no lease or when TTLs were not asked for.
    """

    position: int
    ttl: int | None


@dataclass(frozen=True, slots=True)
class Queue:
    """Every candidate of an election, leader first, as of ``revision``."""

    revision: int
    candidates: list[Candidate]


async def read_candidates(core: Core, prefix: bytes, end: bytes, *, ttl: bool = True) -> Queue:
    """Read the line under ``prefix`` (to ``end``) in create order; with ``ttl``, each lease's."""
    request = rpc.RangeRequest(
        key=prefix,
        range_end=end,
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
    )
    what = f"candidates of {show(prefix[:-1])}"
    response = await core.transport.call(RANGE, request, what=what)
    left: dict[int, int] = {}
    if ttl:
        leases = sorted({item.lease for item in response.kvs if item.lease})
        answers = await asyncio.gather(
            *(
                core.transport.call(LEASE_TTL, rpc.LeaseTimeToLiveRequest(ID=lease), what=what)
                for lease in leases
            )
        )
        left = {lease: answer.TTL for lease, answer in zip(leases, answers, strict=True)}
    candidates = [
        Candidate(
            item.key,
            item.value,
            item.create_revision,
            item.lease,
            item.mod_revision,
            position,
            left.get(item.lease) if item.lease else None,
        )
        for position, item in enumerate(response.kvs)
    ]
    return Queue(response.header.revision, candidates)


async def follow_candidates(
    core: Core, prefix: bytes, end: bytes, *, refresh: float | None = None
) -> AsyncIterator[Queue]:
    """The line now, then again after every change to it (and every ``refresh`` seconds).

    A change is any write under the prefix: a candidate joining, leaving or proclaiming. The
    watch only triggers a read, so nothing is missed: each queue yielded is a fresh read.
    Ends when the client closes.
    """
    while True:
        try:
            queue = await read_candidates(core, prefix, end)
        except ClosedError:
            return
        yield queue
        watch = core.watches.watch(prefix, range_end=end, start_revision=queue.revision + 1)
        with watch:
            try:
                while True:
                    try:
                        async with asyncio.timeout(refresh):
                            await watch.next()
                    except TimeoutError:
                        pass
                    try:
                        queue = await read_candidates(core, prefix, end)
                    except ClosedError:
                        return
                    yield queue
            except Compacted:
                continue  # changes were lost with the history: read again, watch again
            except ClosedError:
                return

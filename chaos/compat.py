"""The gee-h API the workers use, in one place: the supervisor and fenced writes.

The broken worker's unfenced put is the one thing gee-h deliberately does not offer a
leader: it reaches the client's transport through the leadership's core.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import geeh
from geeh import kv

Work = Callable[[geeh.Leadership], Awaitable[None]]
Hook = Callable[[geeh.Leadership], None]


async def run_as_leader(
    election: geeh.Election,
    work: Work,
    value: str,
    *,
    ttl: int,
    on_elected: Hook,
    on_lost: Hook,
) -> None:
    """Campaign; while leader run ``work(leadership)``; on loss cancel it; repeat."""
    await election.run(
        work,
        value,
        ttl=ttl,
        on_elected=on_elected,
        on_lost=lambda leadership, _reason: on_lost(leadership),
    )


async def fenced_put(leadership: geeh.Leadership, key: bytes, value: bytes) -> int:
    """Put ``key`` only while our leader key still carries our token; NotLeader otherwise."""
    return await leadership.put(key, value)


async def unfenced_put(leadership: geeh.Leadership, key: bytes, value: bytes) -> int:
    """A plain put, no guard (what the broken worker does). Returns the revision."""
    store = kv.KV(leadership._core.transport)
    return (await store.txn([], [kv.put(key, value)])).revision

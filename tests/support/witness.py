"""What etcd itself says of a lease, seen from a client that the fault under test spares.

The local deadline is only worth anything if it comes before etcd's own expiry. A witness
polls LeaseTimeToLive and keeps a lower bound of that expiry (every answer "R seconds left",
sent at t, means the lease lives until t + R - 1 at least, whichever way etcd rounds) and
the moment etcd first said the lease is gone. Times are on geeh.session.now(), the clock of
the sessions' deadlines.

Given the holder's ``deadline`` (read when each poll is sent, so that it reflects only
keepalives that etcd applied before answering the poll), it also keeps how far that deadline
ever went past the latest moment etcd could expire the lease (answer received at t with R
seconds left: gone by t + R + 1). Above zero, the holder trusted a lease etcd may have
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import geeh
from geeh._proto import rpc_pb2
from geeh.errors import ClosedError, EtcdError
from geeh.net.retry import LEASE_TTL
from geeh.session import now


class LeaseWitness:
    def __init__(
        self,
        client: geeh.Client,
        lease: int,
        every: float = 0.1,
        deadline: Callable[[], float | None] | None = None,
    ) -> None:
        self.client = client
        self.lease = lease
        self.every = every
        self.deadline = deadline
        self.deadline_overrun = float("-inf")
        self.lives_until = 0.0  # etcd's expiry is no earlier than this
        self.gone_at: float | None = None  # when etcd first answered "no such lease"
        self.answers = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=self.lease)
        while self.gone_at is None:
            sent = now()
            held = self.deadline() if self.deadline is not None else None
            try:
                response = await self.client.core.transport.call(LEASE_TTL, request, timeout=2)
            except ClosedError:
                return
            except EtcdError:
                await asyncio.sleep(self.every)
                continue
            self.answers += 1
            if response.TTL <= 0:
                self.gone_at = now()
                return
            self.lives_until = max(self.lives_until, sent + response.TTL - 1)
            if held is not None:
                latest = now() + response.TTL + 1
                self.deadline_overrun = max(self.deadline_overrun, held - latest)
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

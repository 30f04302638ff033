"""The lessor: one LeaseKeepAlive stream per client, shared by all its sessions."""

from __future__ import annotations

import asyncio
import collections
import time

from ._proto import rpc_pb2 as rpc
from .errors import ClosedError
from .net.failover import Transport
from .net.retry import KEEPALIVE_PATH
from .net.stream import ResumableStream


class Lessor(ResumableStream[rpc.LeaseKeepAliveRequest, rpc.LeaseKeepAliveResponse]):
    """Owns the client's LeaseKeepAlive stream, shared by every session of the client.

    etcd answers a stream's keepalives in order, one answer each, with nothing but the lease
    ID to match them: each lease has a queue of replies awaited in send order. A request that
    timed out keeps its place until its late answer arrives (or the stream ends), so that the
    answer is never taken for the reply to a later request.
    """

    def __init__(self, transport: Transport) -> None:
        super().__init__(
            transport,
            KEEPALIVE_PATH,
            rpc.LeaseKeepAliveRequest,
            rpc.LeaseKeepAliveResponse,
            "keepalive",
        )
        self._waiters: dict[int, collections.deque[asyncio.Future[int]]] = {}

    @property
    def waiting(self) -> int:
        """Leases with a keepalive in flight (for tests: returns to 0 when all is quiet)."""
        return len(self._waiters)

    async def keepalive(self, lease: int, timeout: float, next_in: float = 0.0) -> int:
        """Send one keepalive for ``lease``; return the TTL etcd answered.

        Raises ConnectionError if the stream broke or no answer came within ``timeout``; in the
        latter case the member is reported as failed so the next attempt goes elsewhere.
        ``next_in``: when the next keepalive will go; the member counts as checked until that
        one's answer is due.
        """
        await self.wait_open()
        # The stream's member, not the pinned one: if the pin moved and the stream has not
        # followed yet, the answer comes from the old member and says nothing of the new.
        endpoint = self.endpoint or self._transport.endpoint
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease, collections.deque()).append(reply)
        self.send(rpc.LeaseKeepAliveRequest(ID=lease))
        try:
            # Not wait_for: before Python 3.12 it can swallow a cancellation that comes with
            # the reply, and a closing session then waits a whole keepalive interval.
            async with asyncio.timeout(timeout):
                ttl = await reply
        except TimeoutError:
            self._transport.fail(endpoint, f"no keepalive answer within {timeout:.1f}s")
            raise ConnectionError(f"no keepalive answer from {endpoint}") from None
        covered = self._transport.covered
        until = time.monotonic() + next_in + timeout
        if until > covered.get(endpoint, 0.0):
            covered[endpoint] = until
        return ttl

    def received(self, response: rpc.LeaseKeepAliveResponse) -> None:
        queue = self._waiters.get(response.ID)
        if not queue:
            return
        reply = queue.popleft()
        if not queue:
            del self._waiters[response.ID]
        if not reply.done():  # else the request timed out, or its sender gave up
            reply.set_result(response.TTL)

    def stream_ended(self) -> None:
        self._fail_waiters(ConnectionError("keepalive stream restarted"))

    def _fail_waiters(self, err: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for queue in waiters.values():
            for reply in queue:
                if not reply.done():
                    reply.set_exception(err)

    async def close(self) -> None:
        if not self._closed:
            self._fail_waiters(ClosedError("the client is closed"))
        await super().close()

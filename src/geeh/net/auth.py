"""etcd authentication: one token per client, renewed single-flight when it expires.

Tokens expire (``--auth-token-ttl``, 300 s by default; JWTs by their own TTL) and long
campaigns outlive them. Authenticate costs the server a bcrypt check, so when many calls find
the token expired at once, one Authenticate goes out and the others wait for its answer. The
old token is kept until the new one arrives: a call made meanwhile carries the old one and,
at worst, waits for the renewal too, instead of going out with no token ("user name is
empty", which is not retried). Renewals are at least MIN_INTERVAL apart, so a request that
etcd refuses again with a fresh token (a stream cancelled for "permission denied") cannot
turn into a stream of Authenticate calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# The shortest time between two Authenticate requests (etcd's shortest token TTL is 1 s).
MIN_INTERVAL = 1.0


class Authenticator:
    """Holds the credentials and the current token; renews it one request at a time."""

    def __init__(self, username: str, password: str) -> None:
        self._credentials = (username, password)
        self.token: str | None = None
        self.renewals = 0  # Authenticate requests answered; read by tests
        self._inflight: asyncio.Future[None] | None = None
        self._fetched_at = -MIN_INTERVAL

    @property
    def username(self) -> str:
        return self._credentials[0]

    async def renew(
        self, authenticate: Callable[[str, str], Awaitable[str]], stale: str | None
    ) -> None:
        """Get a new token, unless the one that failed (``stale``) was replaced already.

        ``authenticate(name, password)`` sends one Authenticate request and returns the token.
        """
        if self.token != stale and self.token is not None:
            return  # renewed by someone else since the caller's attempt
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch(authenticate))
            # Retrieved here, so a failure that every waiter gave up on is not logged as lost.
            self._inflight.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(self._inflight)

    async def _fetch(self, authenticate: Callable[[str, str], Awaitable[str]]) -> None:
        wait = self._fetched_at + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._fetched_at = time.monotonic()
        self.token = await authenticate(*self._credentials)
        self.renewals += 1

    def __repr__(self) -> str:
        return f"<Authenticator user={self.username!r}>"  # never the password or the token

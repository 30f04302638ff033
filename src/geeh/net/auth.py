"""etcd authentication: one token per client, renewed single-flight when it expires.

Tokens expire (``--auth-token-ttl``, 300 s by default; JWTs by their own TTL) and long
campaigns outlive them. Authenticate costs the server a bcrypt check, so when many calls find
the token expired at once, one Authenticate goes out and the others wait for its answer. The
old token is kept until the new one arrives: a call made meanwhile carries the old one and,
at worst, waits for the renewal too, instead of going out with no token ("user name is
empty", which is not retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Authenticator:
    """Holds the credentials and the current token; renews it one request at a time."""

    def __init__(self, username: str, password: str) -> None:
        self._credentials = (username, password)
        self.token: str | None = None
        self.renewals = 0  # Authenticate requests answered; read by tests
        self._inflight: asyncio.Future[None] | None = None

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
        await asyncio.shield(self._inflight)

    async def _fetch(self, authenticate: Callable[[str, str], Awaitable[str]]) -> None:
        self.token = await authenticate(*self._credentials)
        self.renewals += 1

    def __repr__(self) -> str:
        return f"<Authenticator user={self.username!r}>"  # never the password or the token

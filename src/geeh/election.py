"""An election: its leader, its candidates, observing it, campaigning in it, and running
work only while leader. The algorithm of a campaign is in campaign.py, its win rule in win.py.
"""

from __future__ import annotations

from typing import Any

from ._proto import rpc_pb2 as rpc
from .campaign import DEFAULT_TTL, Campaign
from .candidates import Candidate, read_candidates
from .core import Core
from .keys import election_prefix, prefix_end, show
from .leader import Leader
from .net.retry import RANGE
from .observe import Observation
from .session import Session
from .supervisor import OnElected, OnLost, Supervisor, Work

__all__ = ["DEFAULT_TTL", "Campaign", "Election"]


class Election:
    """One named election. Get it from :meth:`geeh.Client.election`."""

    def __init__(self, core: Core, name: str | bytes) -> None:
        self._core = core
        self.prefix = election_prefix(name)
        self.name = self.prefix[:-1]
        self._end = prefix_end(self.prefix)

    async def leader(self) -> Leader | None:
        """The current leader (the lowest create revision under the prefix), or None."""
        response = await self._core.transport.call(
            RANGE, self._first_request(), what=f"leader of {show(self.name)}"
        )
        return Leader.from_kv(response.kvs[0]) if response.kvs else None

    async def candidates(self, *, ttl: bool = True) -> list[Candidate]:
        """Every candidate in line, leader first, with its position and its lease's TTL left.

        ``ttl=False`` skips the TTLs (one LeaseTimeToLive request per candidate).
        """
        return (await read_candidates(self._core, self.prefix, self._end, ttl=ttl)).candidates

    def _first_request(self) -> rpc.RangeRequest:
        return rpc.RangeRequest(
            key=self.prefix,
            range_end=self._end,
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
            limit=1,
        )

    def observe(self) -> Observation:
        """Leader changes, as an async iterator: the current leader first, then every change.

        None means "no leader". Use ``async with election.observe() as changes:`` (or call
        ``aclose()``) to stop early; the client's close ends it too. It waits out etcd
        outages; it raises :class:`~geeh.PermissionDenied` if the user may no longer read
        the election, and ClosedError if the client's watch stream stopped after a bug.
        """
        return Observation(self._core, self.prefix, self._end)

    def campaign(
        self,
        value: str | bytes,
        *,
        ttl: int | None = None,
        session: Session | None = None,
        lease: int | None = None,
        cancel_on_loss: bool = True,
    ) -> Campaign:
        """Run for leader with ``value``.

        Await the result for a :class:`~geeh.Leadership` once elected, or use it as
        ``async with election.campaign(value) as leadership:``, which resigns on exit; if
        leadership is lost inside the block, the block is cancelled and exits with
        :class:`~geeh.LeadershipLost` (``cancel_on_loss=False``: it runs on). By default a new
        session (lease of ``ttl`` seconds, 10 if not given) is made for the campaign and
        revoked when it ends; pass ``session`` to share one, or ``lease`` to resume an
        existing lease (after a restart: no new grant, the same key name). Adopting a lease
        deletes the key an earlier process left on it and joins again with a new token, so
        that a frozen earlier holder, should it wake, is fenced out (its place in line is
        given up).
        """
        return Campaign(
            self._core,
            self.name,
            value,
            ttl=ttl,
            session=session,
            lease=lease,
            cancel_on_loss=cancel_on_loss,
        )

    async def run(
        self,
        work: Work,
        value: str | bytes,
        *,
        ttl: int = DEFAULT_TTL,
        again: bool = True,
        grace: float | None = None,
        on_elected: OnElected | None = None,
        on_lost: OnLost | None = None,
    ) -> Any:
        """Run ``await work(leadership)`` only while leader, campaigning again after each loss.

        On a loss, ``work`` is cancelled and awaited (it should stop within ``grace``
        seconds; default: the session's safety margin) before anything else happens; every
        path waits for it, a cancellation of this call included. Leadership is checked
        right before ``work`` starts. When ``work`` returns, raises (the error is logged)
        or ends cancelled by other code, we resign; then, with ``again`` (the default),
        campaign again; otherwise return its result, raise its error, or return None.
        ``again=True`` retries a failed campaign (ElectionError, EtcdUnavailable) after a
        jittered pause, until cancelled or closed. ``on_elected(leadership)`` and
        ``on_lost(leadership, reason)`` are called at the start and end of each term
        (reason None after a resign); an ``async def`` one is awaited, at most ``ttl``
        seconds. Cancel the call to stop: it resigns if leading, withdraws if waiting.
        Returns None when the client closes. See docs/howto/run-while-leader.md.
        """
        supervisor = Supervisor(
            self,
            work,
            value,
            ttl=ttl,
            again=again,
            grace=grace,
            on_elected=on_elected,
            on_lost=on_lost,
        )
        return await supervisor.run()

    def __repr__(self) -> str:
        return f"<Election {self.name!r}>"

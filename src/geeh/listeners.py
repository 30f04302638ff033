"""Listeners: what happened to a client, told as it happens, for metrics and logging.

A listener is any object with some of :class:`Listener`'s methods (subclass it to get no-op
defaults for the rest). Pass listeners to :class:`geeh.Client` (``listeners=[...]``) or add
them with :meth:`geeh.Client.add_listener`. They are called on the client's event loop, in
the order they were added, and must return quickly: they run in the middle of the client's
work (a hand-off, a failover). One that raises is logged on ``geeh.events`` and changes
nothing: the client and the other listeners go on.

The Prometheus adapter, :mod:`geeh.prometheus`, is one such listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CandidateRemoved, ClosedError, SessionExpired
from .events import Events

if TYPE_CHECKING:
    from .leadership import Leadership

__all__ = ["Events", "Listener", "loss_reason"]


def loss_reason(reason: BaseException) -> str:
    """A short, fixed label for why leadership was lost (a metric label, a log field).

    ``"session_expired"``: our lease expired, was revoked, or its local deadline passed;
    ``"candidate_removed"``: our key was deleted (by someone else, or with our lease);
    ``"closed"``: the session or client was closed under it; ``"error"``: anything else.
    """
    if isinstance(reason, SessionExpired):
        return "session_expired"
    if isinstance(reason, CandidateRemoved):
        return "candidate_removed"
    if isinstance(reason, ClosedError):
        return "closed"
    return "error"


class Listener:
    """The events a client reports; every method is a no-op here: override what you need.

    ``election`` arguments are the election's name as bytes; a ``leadership`` argument is the
    :class:`~geeh.Leadership` concerned (its ``name``, ``key``, ``token``, ``session``).
    """

    def campaign_started(self, election: bytes) -> None:
        """A campaign in ``election`` started (before its lease is granted)."""

    def elected(self, leadership: Leadership, waited: float) -> None:
        """We won ``leadership``, ``waited`` seconds after the campaign started."""

    def lost(self, leadership: Leadership, reason: BaseException) -> None:
        """``leadership`` ended without a resign; ``reason`` is the exception saying why.

        :func:`geeh.listeners.loss_reason` turns it into a short label.
        """

    def resigned(self, leadership: Leadership) -> None:
        """``leadership`` ended by :meth:`~geeh.Leadership.resign` (or the client's close)."""

    def keepalive_failed(self, lease: int, error: str) -> None:
        """A keepalive of ``lease`` got no answer (the stream broke, or the member was silent).

        The session retries at once on another member; its local deadline says when a run of
        these becomes a loss.
        """

    def member_switched(self, old: str, new: str, reason: str) -> None:
        """The client left etcd member ``old`` (for ``reason``) and now uses ``new``."""

    def watch_resumed(self, endpoint: str, watches: int) -> None:
        """The watch stream was re-opened on ``endpoint`` and its ``watches`` re-created."""

    def reauthenticated(self) -> None:
        """The auth token expired or was rejected, and a new one was obtained."""

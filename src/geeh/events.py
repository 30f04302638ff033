"""The dispatcher of a client's events to its listeners (see :mod:`geeh.listeners`).

Apart from the public :class:`~geeh.Listener`, so that the transport and the core, which
report events, need not import the recipes (a leadership is only passed through here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from .keys import show

log = logging.getLogger("geeh.events")

__all__ = ["Events", "Won"]


class Won(Protocol):
    """What the dispatcher reads of a :class:`~geeh.Leadership` (for its log lines)."""

    @property
    def name(self) -> bytes: ...

    @property
    def token(self) -> int: ...


class Events:
    """The dispatcher the client's internals call: one call per event, to every listener.

    Shared by the transport, the streams, sessions and elections (they are given it; they
    hold no reference to the client). A listener that raises is logged and skipped.
    """

    def __init__(self, listeners: Iterable[object] = ()) -> None:
        self.listeners: list[object] = list(listeners)

    def add(self, listener: object) -> None:
        self.listeners.append(listener)

    def remove(self, listener: object) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def _emit(self, event: str, *args: object) -> None:
        for listener in list(self.listeners):
            method = getattr(listener, event, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                log.exception("listener %r raised in %s(); ignored", listener, event)

    # -- the events; each is one call at its source --------------------------------------

    def campaign_started(self, election: bytes) -> float:
        """Report a campaign's start; returns the start time, to hand to :meth:`elected`."""
        log.debug("campaign in %s started", show(election))
        self._emit("campaign_started", election)
        return time.monotonic()

    def elected(self, leadership: Won, started: float) -> None:
        waited = time.monotonic() - started
        log.info(
            "elected leader of %s (token %d, after %.3fs)",
            show(leadership.name),
            leadership.token,
            waited,
        )
        self._emit("elected", leadership, waited)

    def leadership_ended(self, leadership: Won, reason: BaseException | None) -> None:
        """``lost`` with a reason, ``resigned`` without (leadership.py logs the loss)."""
        if reason is None:
            log.info("resigned leadership of %s", show(leadership.name))
            self._emit("resigned", leadership)
        else:
            self._emit("lost", leadership, reason)

    def keepalive_failed(self, lease: int, error: object) -> None:
        self._emit("keepalive_failed", lease, str(error))

    def member_switched(self, old: str, new: str, reason: object) -> None:
        self._emit("member_switched", old, new, str(reason))

    def watch_resumed(self, endpoint: str, watches: int) -> None:
        log.info("watch stream resumed on %s with %d watches", endpoint, watches)
        self._emit("watch_resumed", endpoint, watches)

    def reauthenticated(self) -> None:
        log.info("auth token renewed")
        self._emit("reauthenticated")

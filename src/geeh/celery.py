"""Celery beat on gee-h: every replica runs beat, only the elected one sends (``gee-h[celery]``).

::

    celery -A proj beat -S geeh.celery:Scheduler

Each beat replica campaigns in the election ``geeh_election``; the leader sends, the others
stand by and take over when it goes. The schedule's state (``last_run_at`` and
``total_run_count`` of each entry) lives in etcd beside the election, not in a shelve file,
so a new leader goes on where the old one stopped.

Each run is claimed with a fenced write before it is sent (``geeh_delivery =
"at-most-once"``, the default): a deposed beat, paused or cut off, cannot claim, so it cannot
send, and no run is sent twice. The one window left: a beat that dies (or is deposed)
between its claim and its send loses that run. ``"at-least-once"`` sends first and claims
after: nothing is lost then, but a beat that dies between the two makes its successor send
that run again.

Settings (``app.conf``), each with an environment fallback; connection settings fall back
as the ``geeh`` CLI's do (``GEEH_*``, then ``ETCDCTL_*``):

- ``geeh_endpoints`` ($GEEH_ENDPOINTS, $ETCDCTL_ENDPOINTS): etcd endpoints, a list or a
  comma-separated str (127.0.0.1:2379);
- ``geeh_election`` ($GEEH_ELECTION): the election's name (``celery-beat``);
- ``geeh_ttl`` ($GEEH_TTL): the lease TTL in seconds (10);
- ``geeh_cacert``, ``geeh_cert``, ``geeh_key``, ``geeh_server_name``,
  ``geeh_insecure_transport``: TLS, as the CLI's ``--cacert`` and friends;
- ``geeh_user``, ``geeh_password``, ``geeh_password_file``: etcd credentials;
- ``geeh_delivery`` ($GEEH_DELIVERY): ``at-most-once`` (default) or ``at-least-once``;
- ``geeh_after_claim``: a test hook, ``f(entry_name)``, called between claim and send.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import beat

from .cli.connection import FALSE, TRUE, connection_from
from .client import Client
from .completion_queue import ActiveCompletionQueue
from .election import DEFAULT_TTL
from .errors import GeehError, InvalidArgument, NotLeader
from .leadership import Leadership
from .net.tls import TLS
from .schedule_state import EntryState, ScheduleStore
from .session import check_ttl
from .standby import Standby

log = logging.getLogger("geeh.celery")

__all__ = ["BeatSettings", "Scheduler"]

DEFAULT_ELECTION = "celery-beat"
DELIVERIES = ("at-most-once", "at-least-once")
# How long a standby waits for leadership inside one tick before giving beat its loop back.
STANDBY_WAIT = 1.0
# etcd calls made from the beat loop give up after this long (then: nothing is sent).
CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class BeatSettings:
    """The scheduler's settings, resolved from ``app.conf`` and the environment."""

    endpoints: str
    election: str
    ttl: int
    tls: TLS | None
    username: str | None
    password: str | None = field(repr=False)
    delivery: str
    after_claim: Callable[[str], object] | None

    @classmethod
    def from_conf(cls, conf: Any) -> BeatSettings:
        """Resolve from a Celery ``app.conf`` (any mapping); InvalidArgument names the bad one."""

        def get(name: str) -> Any:
            value = conf.get(name)
            return value if value not in (None, "") else None

        endpoints = get("geeh_endpoints")
        if isinstance(endpoints, list | tuple):
            endpoints = ",".join(str(e) for e in endpoints)
        insecure = get("geeh_insecure_transport")
        if isinstance(insecure, str):
            word = insecure.strip().lower()
            if word not in TRUE + FALSE:
                raise InvalidArgument(
                    f"geeh_insecure_transport={insecure!r}: expected true or false"
                )
            insecure = word in TRUE
        args = argparse.Namespace(
            endpoints=endpoints,
            tls_cacert=get("geeh_cacert"),
            tls_cert=get("geeh_cert"),
            tls_key=get("geeh_key"),
            tls_server_name=get("geeh_server_name"),
            insecure_transport=insecure,
            auth_user=get("geeh_user"),
            auth_password=get("geeh_password"),
            auth_password_file=get("geeh_password_file"),
        )
        try:
            connection = connection_from(args, lambda text: None)
        except InvalidArgument as err:
            raise InvalidArgument(_setting_names(str(err))) from None
        election = str(get("geeh_election") or os.environ.get("GEEH_ELECTION") or DEFAULT_ELECTION)
        ttl_given = get("geeh_ttl")
        if ttl_given is None:
            ttl_given = os.environ.get("GEEH_TTL") or DEFAULT_TTL
        try:
            ttl = check_ttl(float(ttl_given))
        except (TypeError, ValueError, InvalidArgument) as err:
            raise InvalidArgument(f"geeh_ttl={ttl_given!r}: {err}") from None
        delivery = str(get("geeh_delivery") or os.environ.get("GEEH_DELIVERY") or DELIVERIES[0])
        if delivery not in DELIVERIES:
            raise InvalidArgument(f"geeh_delivery={delivery!r}: expected one of {DELIVERIES}")
        hook = get("geeh_after_claim")
        if hook is not None and not callable(hook):
            raise InvalidArgument(f"geeh_after_claim must be callable, not {type(hook).__name__}")
        return cls(
            connection.endpoints,
            election,
            ttl,
            connection.tls,
            connection.username,
            connection.password,
            delivery,
            hook,
        )


def _setting_names(message: str) -> str:
    """The CLI's error message, naming the beat settings instead of its flags."""
    return re.sub(r"--([a-z-]+)", lambda m: "geeh_" + m.group(1).replace("-", "_"), message)


class Scheduler(beat.Scheduler):  # type: ignore[misc]
    """A Celery beat scheduler that sends only while it leads its gee-h election.

    See the module's docstring for the settings and the delivery guarantee.
    """

    #: A standby gives beat its loop back at least this often; a leader wakes at least this
    #: often to notice a new entry.
    max_interval = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._standby: Standby | None = None
        self._queue: ActiveCompletionQueue | None = None
        self._client: Client | None = None
        self._store: ScheduleStore | None = None
        self._state: dict[str, EntryState] = {}
        self._term = 0  # the token of the term whose state we loaded; 0: none
        self._claimed: dict[str, int] = {}  # entry -> token of the claim made for its send
        super().__init__(*args, **kwargs)

    @functools.cached_property
    def settings(self) -> BeatSettings:
        """The resolved settings; a bad one stops beat with one line naming it."""
        try:
            return BeatSettings.from_conf(self.app.conf)
        except InvalidArgument as err:
            raise SystemExit(f"geeh.celery: {err}") from None

    def setup_schedule(self) -> None:
        settings = self.settings
        super().setup_schedule()
        self._store = ScheduleStore(settings.election)
        self._queue = ActiveCompletionQueue("geeh-beat")

        async def make() -> Client:  # on the queue's loop; not connected: etcd may be down
            return Client(
                settings.endpoints,
                tls=settings.tls,
                username=settings.username,
                password=settings.password,
            )

        self._client = client = self._queue.call(make())
        value = f"{socket.gethostname()}:{os.getpid()}"
        self._standby = Standby(self._queue, client, settings.election, value, settings.ttl)
        self._standby.start()

    # -- the loop: stand by, or load the term's state and tick --------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        assert self._standby is not None
        leadership = self._standby.current()
        if leadership is None:
            if self._term:
                log.warning("beat: leadership lost; standing by")
                self._term = 0
            leadership = self._standby.wait_elected(STANDBY_WAIT)
            if leadership is None:
                return 0.0  # give beat its loop back; it calls again at once
        if leadership.token != self._term and not self._load(leadership):
            return STANDBY_WAIT
        return float(super().tick(*args, **kwargs))

    def _load(self, leadership: Leadership) -> bool:
        """Take the schedule's state from etcd at the start of a term (False: not reachable)."""
        assert self._standby is not None and self._store is not None
        store = self._store

        async def load() -> dict[str, EntryState]:
            assert self._client is not None
            return await store.load(self._client)

        try:
            self._state = self._standby.call(load(), CALL_TIMEOUT)
        except GeehError as err:
            log.warning("beat: cannot read the schedule's state: %s", err)
            return False
        for name, entry in self.schedule.items():
            state = self._state.get(name)
            if state is not None and state.last_run_at is not None:
                stamp = datetime.datetime.fromtimestamp(state.last_run_at, datetime.UTC)
                entry.last_run_at = stamp.astimezone(self.app.timezone)
                entry.total_run_count = state.total_run_count
        self._term = leadership.token
        self._heap = None  # rebuilt from the loaded state on this tick
        log.info("beat: leading (token %d); schedule state loaded", leadership.token)
        return True

    # -- each run: claim, then send (or send, then claim) ------------------------------------

    def reserve(self, entry: Any) -> Any:
        new_entry = next(entry)
        self.schedule[entry.name] = new_entry
        if self.settings.delivery == "at-most-once":
            if self._claim(new_entry):
                self._claimed[entry.name] = self._term
        else:
            self._claimed[entry.name] = self._term
        return new_entry

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        token = self._claimed.pop(entry.name, 0)
        if not token:
            return  # not claimed: another beat leads, or etcd did not answer
        hook = self.settings.after_claim
        if hook is not None and self.settings.delivery == "at-most-once":
            try:
                hook(entry.name)  # a test hook: it may pause us exactly here
            except Exception:
                log.exception("geeh_after_claim %r raised; ignored", hook)
        leadership = self._standby.current() if self._standby is not None else None
        if leadership is None or leadership.token != token:
            log.warning("beat: deposed before sending %s; not sent", entry.name)
            return
        super().apply_entry(entry, producer=producer)
        if self.settings.delivery == "at-least-once":
            self._claim(self.schedule[entry.name])

    def _claim(self, new_entry: Any) -> bool:
        """Record the run of ``new_entry`` in etcd, fenced on our term; True once claimed."""
        assert self._standby is not None and self._store is not None
        leadership = self._standby.current()
        if leadership is None or leadership.token != self._term:
            return False
        name = new_entry.name
        seen = self._state.get(name, EntryState())
        stamp = new_entry.last_run_at
        claim = self._store.claim(
            leadership, name, seen, stamp.timestamp(), int(new_entry.total_run_count)
        )
        try:
            ok, state = self._standby.call(claim, CALL_TIMEOUT)
        except NotLeader:
            log.warning("beat: deposed; %s not claimed", name)
            self._term = 0
            return False
        except GeehError as err:
            log.warning("beat: could not claim %s: %s; reading the state again", name, err)
            self._term = 0  # the claim may have been applied: the next tick reads it
            return False
        self._state[name] = state
        if not ok:
            log.warning("beat: %s was claimed elsewhere; reading the state again", name)
            self._term = 0
        return ok

    # -- shutting down -----------------------------------------------------------------------

    def close(self) -> None:
        try:
            super().close()
        finally:
            standby, self._standby = self._standby, None
            client, self._client = self._client, None
            queue, self._queue = self._queue, None
            if standby is not None:
                standby.close()  # resign: a standby takes over at once
            if queue is not None:
                if client is not None:
                    with contextlib.suppress(Exception):
                        queue.call(client.close(), CALL_TIMEOUT)
                queue.close()

    @property
    def info(self) -> str:
        s = self.settings
        return f"    . gee-h -> election {s.election!r} on {s.endpoints} (ttl {s.ttl}s)"

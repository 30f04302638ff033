"""Prometheus metrics for gee-h clients: ``pip install "gee-h[prometheus]"``.

::

    from prometheus_client import CollectorRegistry, start_http_server
    import geeh
    from geeh.prometheus import PrometheusListener

    registry = CollectorRegistry()
    metrics = PrometheusListener(registry)
    start_http_server(9100, registry=registry)
    async with geeh.Client(endpoints, listeners=[metrics]) as client:
        ...

Nothing is registered at import: the metrics go into the registry given (pass
``prometheus_client.REGISTRY`` for the global one). One listener may serve several clients.
Labels stay few: the election name and the loss reason, never lease IDs, keys or values.

=================================== ======= =============================================
metric                              type    meaning
=================================== ======= =============================================
``geeh_leader{election}``           gauge   1 while this process leads the election, else 0
``geeh_leadership_changes_total``   counter terms won by this process (summed over
                                            replicas: how often the leader changed)
``geeh_leadership_lost_total``      counter leaderships lost without a resign, by
``{reason}``                                ``reason``: ``session_expired``,
                                            ``candidate_removed``, ``closed``, ``error``
``geeh_campaign_wait_seconds``      histo.  from the start of a campaign to its win
``geeh_keepalive_failures_total``   counter keepalives that got no answer
``geeh_member_switches_total``      counter times the client moved to another etcd member
``geeh_watch_resumes_total``        counter times the watch stream was re-opened with its
                                            watches (after a failure or a failover)
``geeh_reauthentications_total``    counter auth tokens renewed after they expired
``geeh_lease_deadline_seconds``     gauge   for each election led, the time left before the
``{election}``                              leader's local deadline: how long leadership
                                            lasts if no keepalive is answered from now on
=================================== ======= =============================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .keys import show
from .listeners import Listener, loss_reason

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'geeh.prometheus needs prometheus-client: pip install "gee-h[prometheus]"'
    ) from err

if TYPE_CHECKING:
    from .leadership import Leadership

__all__ = ["CAMPAIGN_WAIT_BUCKETS", "PrometheusListener"]

# A campaign waits milliseconds for a free seat, a standby hours for its turn.
CAMPAIGN_WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    1800.0, 3600.0, float("inf"),
)  # fmt: skip

LOSS_REASONS = ("session_expired", "candidate_removed", "closed", "error")


class PrometheusListener(Listener):
    """A :class:`geeh.Listener` that keeps gee-h's metrics in ``registry``.

    Pass it to :class:`geeh.Client` (``listeners=[...]``) or
    :meth:`~geeh.Client.add_listener`. The metrics are listed in :mod:`geeh.prometheus`.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()  # scrapes run on the HTTP server's threads
        self._held: dict[int, Leadership] = {}
        self.leader = Gauge(
            "geeh_leader",
            "1 while this process leads the election, else 0",
            ["election"],
            registry=registry,
        )
        self.leadership_changes = Counter(
            "geeh_leadership_changes_total",
            "Elections won by this process (each is a change of leader)",
            registry=registry,
        )
        self.leadership_lost = Counter(
            "geeh_leadership_lost_total",
            "Leaderships lost without a resign, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in LOSS_REASONS:
            self.leadership_lost.labels(reason=reason)  # present at 0 from the start
        self.campaign_wait = Histogram(
            "geeh_campaign_wait_seconds",
            "Time from the start of a campaign to its win",
            buckets=CAMPAIGN_WAIT_BUCKETS,
            registry=registry,
        )
        self.keepalive_failures = Counter(
            "geeh_keepalive_failures_total",
            "Lease keepalives that got no answer",
            registry=registry,
        )
        self.member_switches = Counter(
            "geeh_member_switches_total",
            "Times the client left an etcd member for another",
            registry=registry,
        )
        self.watch_resumes = Counter(
            "geeh_watch_resumes_total",
            "Times the watch stream was re-opened with its watches",
            registry=registry,
        )
        self.reauthentications = Counter(
            "geeh_reauthentications_total",
            "Auth tokens renewed after they expired or were rejected",
            registry=registry,
        )
        registry.register(_DeadlineCollector(self))

    # -- the listener's events -------------------------------------------------------------

    def elected(self, leadership: Leadership, waited: float) -> None:
        with self._lock:
            self._held[id(leadership)] = leadership
        self.leader.labels(election=show(leadership.name)).set(1)
        self.leadership_changes.inc()
        self.campaign_wait.observe(waited)

    def lost(self, leadership: Leadership, reason: BaseException) -> None:
        self.leadership_lost.labels(reason=loss_reason(reason)).inc()
        self._ended(leadership)

    def resigned(self, leadership: Leadership) -> None:
        self._ended(leadership)

    def _ended(self, leadership: Leadership) -> None:
        with self._lock:
            self._held.pop(id(leadership), None)
            # Another leadership of the same election in this process (a hand-off between
            # two of its clients, reported in either order) keeps the gauge at 1.
            still = any(held.name == leadership.name for held in self._held.values())
        self.leader.labels(election=show(leadership.name)).set(1 if still else 0)

    def keepalive_failed(self, lease: int, error: str) -> None:
        self.keepalive_failures.inc()

    def member_switched(self, old: str, new: str, reason: str) -> None:
        self.member_switches.inc()

    def watch_resumed(self, endpoint: str, watches: int) -> None:
        self.watch_resumes.inc()

    def reauthenticated(self) -> None:
        self.reauthentications.inc()

    def deadlines(self) -> dict[str, float]:
        """Seconds left before the local deadline, for each election led (the least if two)."""
        now = time.monotonic()
        with self._lock:
            held = list(self._held.values())
        left: dict[str, float] = {}
        for leadership in held:
            name = show(leadership.name)
            value = max(0.0, leadership.session.deadline - now)
            left[name] = min(value, left.get(name, value))
        return left


class _DeadlineCollector(Collector):
    """geeh_lease_deadline_seconds, computed at scrape time: no timer keeps it fresh."""

    def __init__(self, listener: PrometheusListener) -> None:
        self._listener = listener

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for election, left in sorted(self._listener.deadlines().items()):
            family.add_metric([election], left)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "geeh_lease_deadline_seconds",
            "Time left before the local deadline of each election led: how long leadership "
            "lasts if no keepalive is answered from now on",
            labels=["election"],
        )

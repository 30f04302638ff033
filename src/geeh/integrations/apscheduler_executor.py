"""LeaderExecutor: the APScheduler executor that runs a job only once its run is claimed.

It wraps the executor that really runs the job. As a job falls due, the scheduler hands it
to LeaderExecutor, which asks the LeaderScheduler guarding that scheduler (a :class:`Guard`)
to claim the fire times in etcd, and passes on only the runs whose claim held. Re-exported
by geeh.integrations.apscheduler, whose docstring tells the whole story.
"""

from __future__ import annotations

import datetime
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import InvalidArgument

try:
    from apscheduler.executors.asyncio import AsyncIOExecutor
    from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'geeh.integrations.apscheduler needs APScheduler 3: pip install "gee-h[apscheduler]"'
    ) from err

__all__ = ["Deliver", "Guard", "LeaderExecutor", "guard", "guard_of", "unguard"]

log = logging.getLogger("geeh.apscheduler")

Deliver = Callable[[Any, list[datetime.datetime]], None]


class Guard(Protocol):
    """What a LeaderExecutor needs of the LeaderScheduler that guards its scheduler."""

    guarded: set[str]  # aliases of the executors that claim

    def claim_then(
        self, job: Any, run_times: list[datetime.datetime], deliver: Deliver
    ) -> None: ...


# Which guard (LeaderScheduler) a scheduler has: how its LeaderExecutors find it when started.
_guards: weakref.WeakKeyDictionary[Any, Guard] = weakref.WeakKeyDictionary()


def guard(scheduler: Any, by: Guard) -> None:
    """Record that ``by`` guards ``scheduler``: its LeaderExecutors claim through it."""
    _guards[scheduler] = by


def guard_of(scheduler: Any) -> Guard | None:
    """The guard of ``scheduler``, if it has one."""
    return _guards.get(scheduler)


def unguard(scheduler: Any) -> None:
    """``scheduler`` has no guard any more. Idempotent."""
    _guards.pop(scheduler, None)


class LeaderExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs a job on ``executor`` (default: the scheduler type's own) once its claim holds.

    Only works under a :class:`LeaderScheduler`, which makes the claims (see the module).
    """

    def __init__(self, executor: Any = None) -> None:
        super().__init__()
        if executor is not None and not isinstance(executor, BaseExecutor):
            raise InvalidArgument(
                f"executor must be an APScheduler executor, not {type(executor).__name__}"
            )
        self._inner: Any = executor
        self._guard: Guard | None = None
        self._stopped = False

    def start(self, scheduler: Any, alias: str) -> None:
        guard = guard_of(scheduler)
        if guard is None:
            raise InvalidArgument(
                "a LeaderExecutor runs jobs only under geeh's LeaderScheduler: start the "
                "scheduler with it"
            )
        super().start(scheduler, alias)
        if self._inner is None:
            is_asyncio = isinstance(scheduler, AsyncIOScheduler)
            self._inner = AsyncIOExecutor() if is_asyncio else ThreadPoolExecutor()
        self._inner.start(scheduler, alias)
        self._guard = guard
        self._stopped = False
        guard.guarded.add(alias)

    def shutdown(self, wait: bool = True) -> None:
        self._stopped = True
        if self._inner is not None:
            self._inner.shutdown(wait)

    def submit_job(self, job: Any, run_times: list[datetime.datetime]) -> None:
        # Called by the scheduler (its thread, or its loop) as the job falls due: the claim
        # goes to etcd in the background, and the run is handed on only if it holds.
        assert self._guard is not None, "the executor was not started"
        self._guard.claim_then(job, list(run_times), self._deliver)

    def _do_submit_job(self, job: Any, run_times: list[datetime.datetime]) -> None:
        raise NotImplementedError  # submit_job hands every run to the wrapped executor

    def _deliver(self, job: Any, run_times: list[datetime.datetime]) -> None:
        if self._stopped:
            return
        try:
            self._inner.submit_job(job, run_times)
        except MaxInstancesReachedError:
            log.warning(
                "job %r not run at %s: it still runs (max_instances %d reached)",
                job.id,
                run_times[-1],
                job.max_instances,
            )
        except Exception:
            log.exception("job %r could not be submitted to its executor", job.id)

"""APScheduler 3.x on gee-h: ``pip install "gee-h[apscheduler]"``.

Every replica (process, gunicorn worker, pod) runs the same scheduler; only the one that leads
the election runs jobs, the others stand by with their scheduler paused::

    scheduler = AsyncIOScheduler()
    scheduler.add_job(report, "cron", minute="*/5")
    async with geeh.Client(endpoints) as client:
        async with LeaderScheduler(scheduler, client.election("reports")):
            await stopped.wait()

:class:`LeaderScheduler` starts the scheduler paused, resumes it when elected and pauses it
in the same loop step as a loss. A deposed leader (SIGSTOP, cut off) may wake up with a run
already picked, so each run is also **claimed** (:mod:`geeh.integrations.claims`): a fenced
Txn records the fire time under ``claims`` (default ``geeh.apscheduler/<election>/``), and a
run whose claim fails is dropped. A fire time runs at most once across all replicas, even
across a failover; one that dies between claim and run loses that run.

Claims are made by :class:`LeaderExecutor`, which wraps the executor that runs the job. A
scheduler without a ``"default"`` executor of its own gets one (its type's default,
wrapped); executors configured by hand must be wrapped, or their jobs are refused at start.
``AsyncIOScheduler`` and ``BackgroundScheduler`` are supported (``async with``, or ``with
LeaderScheduler(..., queue=queue)`` from blocking code); ``BlockingScheduler`` is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
from typing import Any

from ..completion_queue import ActiveCompletionQueue
from ..election import DEFAULT_TTL, Election
from ..errors import ClosedError, ElectionError, EtcdUnavailable, InvalidArgument
from ..keys import show, to_bytes
from ..leadership import Leadership
from ..net.retry import Backoff
from ..tasks import failed
from .apscheduler_executor import Deliver, LeaderExecutor, guard, guard_of, unguard
from .claims import claim_runs

try:
    from apscheduler.events import EVENT_JOB_ADDED, EVENT_JOB_MODIFIED
    from apscheduler.schedulers import SchedulerNotRunningError
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'geeh.integrations.apscheduler needs APScheduler 3: pip install "gee-h[apscheduler]"'
    ) from err

__all__ = ["LeaderExecutor", "LeaderScheduler"]

log = logging.getLogger("geeh.apscheduler")


class LeaderScheduler:
    """Run ``scheduler``'s jobs only while this process leads ``election``; see the module.

    ``value`` is this candidate's value (default ``HOSTNAME:PID``), ``ttl`` its lease TTL:
    how soon a standby takes over from a leader that died. The scheduler must not be started
    yet: this starts it (paused) and, on exit, shuts it down, waiting up to ``grace``
    seconds for running jobs, then resigns so that the next replica takes over without
    overlap. ``claims`` is the key prefix of the claims (see the module).
    """

    def __init__(
        self,
        scheduler: Any,
        election: Election,
        value: str | bytes | None = None,
        *,
        ttl: int = DEFAULT_TTL,
        claims: str | bytes | None = None,
        grace: float = 30.0,
        queue: ActiveCompletionQueue | None = None,
    ) -> None:
        if isinstance(grace, bool) or not grace >= 0:
            raise InvalidArgument(f"grace must be a number of seconds >= 0, got {grace!r}")
        if not isinstance(scheduler, BaseScheduler):
            raise InvalidArgument(
                f"scheduler must be an APScheduler 3 scheduler, not {type(scheduler).__name__}"
            )
        # (BackgroundScheduler is a BlockingScheduler that starts a thread of its own.)
        if isinstance(scheduler, BlockingScheduler) and not isinstance(
            scheduler, BackgroundScheduler
        ):
            raise InvalidArgument(
                "BlockingScheduler.start() never returns: use BackgroundScheduler or "
                "AsyncIOScheduler"
            )
        if not isinstance(election, Election):
            raise InvalidArgument(f"election must be a geeh Election, not {type(election)}")
        self.scheduler = scheduler
        self.election = election
        default = f"{socket.gethostname()}:{os.getpid()}"
        self._value = to_bytes(value if value is not None else default, "value")
        self._ttl = ttl
        self.claims = (
            to_bytes(claims, "claims")
            if claims is not None
            else b"geeh.apscheduler/" + election.name + b"/"
        )
        self._grace = float(grace)
        self._queue = queue
        self.guarded: set[str] = set()  # aliases of the executors that claim (LeaderExecutor)
        self._leadership: Leadership | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run: asyncio.Task[Any] | None = None
        self._claiming: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def leadership(self) -> Leadership | None:
        """The current term while leading, else None (for fenced writes in jobs: ``put``,
        ``txn``); from any thread, a job's too."""
        leadership = self._leadership
        return leadership if leadership is not None and leadership.is_leader else None

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> LeaderScheduler:
        """Start the scheduler paused and campaign; jobs run once elected."""
        if self._closed:
            raise ClosedError("this LeaderScheduler was closed")
        if self._run is not None:
            return self
        if self.scheduler.state != STATE_STOPPED:
            raise InvalidArgument("the scheduler is already started: let LeaderScheduler start it")
        if guard_of(self.scheduler) is not None:
            raise InvalidArgument("the scheduler already has a LeaderScheduler")
        self._loop = asyncio.get_running_loop()
        guard(self.scheduler, self)
        try:
            with contextlib.suppress(ValueError):  # the user's own "default": checked below
                self.scheduler.add_executor(LeaderExecutor(), "default")
            self.scheduler.start(paused=True)
            for job in self.scheduler.get_jobs():
                if job.executor not in self.guarded:
                    raise InvalidArgument(
                        f"job {job.id!r} runs on executor {job.executor!r}, which is not a "
                        "LeaderExecutor: wrap it, e.g. LeaderExecutor(ThreadPoolExecutor())"
                    )
        except BaseException:
            await self._shutdown()
            unguard(self.scheduler)
            raise
        self.scheduler.add_listener(self._job_changed, EVENT_JOB_ADDED | EVENT_JOB_MODIFIED)
        self._run = self._loop.create_task(
            self._campaign(), name=f"geeh-apscheduler-{show(self.election.name)}"
        )
        self._run.add_done_callback(failed)
        return self

    async def aclose(self) -> None:
        """Pause, shut the scheduler down (running jobs finish, within ``grace``), then
        resign. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pause()
        for task in list(self._claiming):
            task.cancel()
        if self._claiming:
            await asyncio.wait(set(self._claiming))
        if self._run is not None:
            await self._shutdown()
            self._run.cancel()
            await asyncio.wait({self._run})
        unguard(self.scheduler)

    async def _shutdown(self) -> None:
        if not self.scheduler.running:
            return
        if isinstance(self.scheduler, AsyncIOScheduler):
            self.scheduler.shutdown(wait=False)  # it cancels its coroutine jobs: no wait
            return
        # A thread cannot be cancelled: wait for running jobs up to the grace, then go on.
        stopping = asyncio.ensure_future(asyncio.to_thread(self._stop_scheduler))
        stopping.add_done_callback(failed)  # if it outlives the wait, its end is still seen
        done, _ = await asyncio.wait({stopping}, timeout=self._grace)
        if not done:
            log.error(
                "jobs still run %gs after the scheduler was shut down; resigning anyway",
                self._grace,
            )

    def _stop_scheduler(self) -> None:
        with contextlib.suppress(SchedulerNotRunningError):  # the user shut it down first
            self.scheduler.shutdown(wait=True)

    async def __aenter__(self) -> LeaderScheduler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> LeaderScheduler:
        return self._blocking_queue().call(self.start(), timeout=30.0)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The blocking form of :meth:`aclose` (needs ``queue``)."""
        queue = self._blocking_queue()
        closing = self.aclose()
        try:
            queue.call(closing, timeout=60.0)
        except ClosedError:
            closing.close()  # never started
            # The queue closed first (its client too: no leadership is left): the scheduler
            # still has its own thread, stopped from here.
            self._closed = True
            with contextlib.suppress(SchedulerNotRunningError, RuntimeError):
                self.scheduler.shutdown(wait=False)
            unguard(self.scheduler)

    def _blocking_queue(self) -> ActiveCompletionQueue:
        if self._queue is None:
            raise InvalidArgument(
                "use 'async with LeaderScheduler(...)', or pass queue= for the blocking form"
            )
        return self._queue

    # -- leading ---------------------------------------------------------------------------

    async def _campaign(self) -> None:
        """Election.run until the client closes. A campaign that fails (etcd unreachable for
        longer than a request may take) is made again: a replica stays a candidate."""
        backoff = Backoff(base=0.5, cap=5.0)
        while True:
            try:
                await self.election.run(self._lead, self._value, ttl=self._ttl)
                return  # the client was closed
            except (ElectionError, EtcdUnavailable) as err:
                log.warning("campaign in %s failed: %s; again", show(self.election.name), err)
            await asyncio.sleep(backoff.next_delay())

    async def _lead(self, leadership: Leadership) -> None:
        """One term: the scheduler runs from the win to the loss (paused in the same step)."""

        def lost(reason: BaseException | None) -> None:
            self._pause()

        self._leadership = leadership
        leadership.lost.add_callback(lost)
        try:
            with contextlib.suppress(SchedulerNotRunningError):
                self.scheduler.resume()
            await asyncio.Future()  # until the loss (or the close) cancels us
        finally:
            leadership.lost.remove_callback(lost)
            self._pause()
            self._leadership = None

    def _pause(self) -> None:
        with contextlib.suppress(SchedulerNotRunningError):
            self.scheduler.pause()

    def _job_changed(self, event: Any) -> None:
        job = self.scheduler.get_job(event.job_id)
        if job is not None and job.executor not in self.guarded:
            log.error(
                "job %r runs on executor %r, which is not a LeaderExecutor: its runs are "
                "not claimed, so a deposed leader may run it too",
                job.id,
                job.executor,
            )

    # -- claims ------------------------------------------------------------------------------

    def claim_then(self, job: Any, run_times: list[datetime.datetime], deliver: Deliver) -> None:
        """Claim ``run_times`` of ``job`` on the client's loop, then ``deliver`` what holds.

        Called from the scheduler's thread or loop; ``deliver`` runs back there (on the
        client's loop if the scheduler has no loop of its own).
        """
        try:
            origin: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            origin = None
        loop = self._loop
        if loop is None or self._closed:
            return
        if origin is loop:
            self._spawn(job, run_times, deliver, origin)
            return
        try:
            loop.call_soon_threadsafe(self._spawn, job, run_times, deliver, origin)
        except RuntimeError:  # the client's loop is closed: nothing can be claimed
            log.warning("job %r not run: the gee-h client's loop is closed", job.id)

    def _spawn(
        self,
        job: Any,
        run_times: list[datetime.datetime],
        deliver: Deliver,
        origin: asyncio.AbstractEventLoop | None,
    ) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._claim_then(job, run_times, deliver, origin), name=f"geeh-claim-{job.id}"
        )
        self._claiming.add(task)
        task.add_done_callback(self._claim_done)

    def _claim_done(self, task: asyncio.Task[None]) -> None:
        self._claiming.discard(task)
        failed(task, "job claim")

    async def _claim_then(
        self,
        job: Any,
        run_times: list[datetime.datetime],
        deliver: Deliver,
        origin: asyncio.AbstractEventLoop | None,
    ) -> None:
        claimed = await self.claim(job.id, run_times)
        if not claimed:
            return
        if origin is None or origin is asyncio.get_running_loop():
            deliver(job, claimed)
        else:
            with contextlib.suppress(RuntimeError):  # the scheduler's loop is gone
                origin.call_soon_threadsafe(deliver, job, claimed)

    async def claim(
        self, job_id: str, run_times: list[datetime.datetime]
    ) -> list[datetime.datetime]:
        """The fire times of ``job_id`` this replica may run: none unless it leads, else
        those after the last one claimed by any leader (see :mod:`~geeh.integrations.claims`)."""
        key = self.claims + to_bytes(job_id, "job id")
        return await claim_runs(self._leadership, key, run_times)

    def __repr__(self) -> str:
        state = "leading" if self.leadership is not None else "standby"
        return f"<LeaderScheduler {show(self.election.name)} {state}>"

"""An APScheduler replica as users deploy it: a BackgroundScheduler under LeaderScheduler.

Usage: python scheduler_replica.py ENDPOINTS NAME RUNS_FILE TTL
Campaigns with its pid as value; a job fires every second on whole seconds (the same fire
times in every replica). Each run appends "PID FIRE_TIME" to RUNS_FILE (one write, O_APPEND).
Prints "ready" once started; SIGTERM stops it (exit 0), printing "stopped".
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler

import geeh
from geeh.integrations.apscheduler import LeaderScheduler
from geeh.integrations.claims import stamp

ALIGNED = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


def main(endpoints: str, name: str, runs: str, ttl: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pid = os.getpid()
    out = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def executed(event: Any) -> None:
        os.write(out, b"%d %s\n" % (pid, stamp(event.scheduled_run_time)))

    with geeh.ActiveCompletionQueue() as queue:
        client = queue.client(endpoints)
        scheduler = BackgroundScheduler(timezone=datetime.UTC)
        scheduler.add_job(lambda: None, "interval", seconds=1, start_date=ALIGNED, id="tick")
        scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
        with LeaderScheduler(scheduler, client.election(name), str(pid), ttl=ttl, queue=queue):
            print("ready", flush=True)
            stop.wait()
    print("stopped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))

"""The Celery app that the beat benchmark and tests run: one entry every second.

Configured by the environment, so that every replica, whichever scheduler it runs, sends the
same schedule to the same broker:

- ``BEAT_BROKER_DIR``: kombu's filesystem transport keeps each message as a file there;
- ``BEAT_INTERVAL`` (1), ``BEAT_LOCK_TIMEOUT`` (6): the entry's period, redbeat's lock timeout;
- ``REDBEAT_URL``: redbeat's Redis, when ``-S redbeat.RedBeatScheduler`` runs;
- ``GEEH_*``: gee-h's scheduler (see geeh.celery);
- ``BEAT_PAUSE_FILE``: the claim/send test hook; when that file exists, the beat that
  reaches the hook takes it (renames it to ``<file>.<pid>``) and stops itself (SIGSTOP)
  right between its claim and its send.

Each message carries the wall time of its publication and the publisher's pid in its
headers, so a count made from the broker's files alone tells ticks apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

BROKER_DIR = os.environ.get("BEAT_BROKER_DIR", "/tmp/geeh-beat-broker")
INTERVAL = float(os.environ.get("BEAT_INTERVAL", "1"))
LOCK_TIMEOUT = int(os.environ.get("BEAT_LOCK_TIMEOUT", "6"))

app = Celery("beat_app")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": BROKER_DIR,
        "data_folder_out": BROKER_DIR,
        "processed_folder": BROKER_DIR,
        "control_folder": os.path.join(BROKER_DIR, "control"),
    },
    beat_schedule={"tick": {"task": "beat_app.tick", "schedule": INTERVAL}},
    beat_max_loop_interval=INTERVAL,
    # redbeat: the same lock timeout as gee-h's TTL, and the same interval.
    redbeat_redis_url=os.environ.get("REDBEAT_URL", "redis://127.0.0.1:6379/0"),
    redbeat_lock_timeout=LOCK_TIMEOUT,
    redbeat_key_prefix=os.environ.get("REDBEAT_PREFIX", "redbeat:"),
    geeh_ttl=LOCK_TIMEOUT,
)


@app.task(name="beat_app.tick")
def tick() -> None:
    """The scheduled task: nothing consumes it; the broker's files are what is counted."""


@before_task_publish.connect
def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers["sent_at"] = time.time()
        headers["sent_by"] = os.getpid()


def pause_after_claim(entry: str) -> None:
    """geeh_after_claim: stop this process right after its claim if asked to (see above)."""
    trigger = os.environ.get("BEAT_PAUSE_FILE")
    if not trigger:
        return
    with contextlib.suppress(FileNotFoundError):
        os.rename(trigger, f"{trigger}.{os.getpid()}")  # only one beat takes it
        os.kill(os.getpid(), signal.SIGSTOP)


app.conf.geeh_after_claim = pause_after_claim


def _pause_redbeat_between_lock_and_send() -> None:
    """The same hook for redbeat: its tick extends the lock, then sends (apply_async)."""
    try:
        from redbeat import schedulers
    except ImportError:
        return
    send = schedulers.RedBeatScheduler.apply_async

    def apply_async(self: Any, entry: Any, *args: Any, **kwargs: Any) -> Any:
        pause_after_claim(entry.name)
        return send(self, entry, *args, **kwargs)

    schedulers.RedBeatScheduler.apply_async = apply_async


if os.environ.get("BEAT_PAUSE_FILE") and any("redbeat" in arg for arg in sys.argv):
    _pause_redbeat_between_lock_and_send()

"""A job: the CMD of a process-level worker, run by ``geeh run`` only while it leads.

It forks a child that leaves its process group (``setsid``: only geeh's watchdog, as the
tree's subreaper, can still find it). CMD and the child each append a heartbeat (token, pid,
role, time) to the worker's history every ``--interval`` seconds; CMD also makes fenced
writes of ``token:worker:seq`` to the run register with ``geeh put --fenced``, one at a
time, and logs each attempt and its outcome. The checker judges from the heartbeats that two
leaders' trees were never alive at once, and from etcd's history that no deposed tree wrote.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .history import Log


def beat_forever(log: Log, token: int, interval: float) -> None:
    while True:
        log.write("beat", token=token, pid=os.getpid(), role="child")
        time.sleep(interval)


class Job:
    def __init__(self, args: argparse.Namespace, log: Log, token: int) -> None:
        self.args = args
        self.log = log
        self.token = token
        self.seq = 0
        self.put: subprocess.Popen[bytes] | None = None
        self.value = ""
        self.started = 0.0
        self.next_put = 0.0

    def start_put(self) -> None:
        self.seq += 1
        self.value = f"{self.token}:{self.args.id}:{self.seq}"
        self.started = time.monotonic()
        self.log.write("try", token=self.token, value=self.value, t=self.started)
        self.put = subprocess.Popen(
            [sys.executable, "-m", "geeh.cli", "put", "--fenced", self.args.register, self.value],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def check_put(self) -> None:
        assert self.put is not None
        code = self.put.poll()
        if code is None:
            return
        self.put = None
        result = {0: "ok", 3: "rejected"}.get(code, f"unknown: exit {code}")
        self.log.write("act", token=self.token, value=self.value, start=self.started,
                       end=time.monotonic(), result=result)  # fmt: skip
        self.next_put = time.monotonic() + self.args.put_every

    def run(self) -> None:
        while True:
            self.log.write("beat", token=self.token, pid=os.getpid(), role="cmd")
            if self.put is not None:
                self.check_put()
            elif time.monotonic() >= self.next_put:
                self.start_put()
            time.sleep(self.args.interval)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.job")
    parser.add_argument("--id", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--register", required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--put-every", type=float, default=0.3)
    args = parser.parse_args()
    token = int(os.environ["GEEH_FENCING_TOKEN"])
    if os.fork() == 0:
        os.setsid()
        beat_forever(Log(Path(args.out)), token, args.interval)
    # SIGTERM (from geeh, passed on): a clean exit at once (every record is flushed); the
    # watchdog then stops the child.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    Job(args, Log(Path(args.out)), token).run()


if __name__ == "__main__":
    main()

"""Child processes of a run: started, signalled, restarted, and always stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux), even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_parser(prog: str) -> argparse.ArgumentParser:
    """The arguments every worker process takes; each kind adds its own."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--id", required=True)
    parser.add_argument("--endpoints", required=True, help="comma-separated host:port")
    parser.add_argument("--ttl", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--broken", action="store_true")
    parser.add_argument("--parent", type=int, required=True)
    return parser


def run_worker(
    args: argparse.Namespace,
    serve: Callable[[], Coroutine[Any, Any, None]],
    on_term: Callable[[], None] = lambda: None,
) -> None:
    """Run a worker process's ``serve()``: it dies with the controller, SIGTERM cancels it
    (after ``on_term``), and its log lines name it."""
    die_with_parent(args.parent)
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {args.id} %(name)s %(levelname)s %(message)s"
    )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            on_term()
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        with contextlib.suppress(asyncio.CancelledError):
            await serve()

    asyncio.run(main())


class Child:
    """One chaos process (``python -m chaos.<module> ...``), restartable under one name.

    Its stdout and stderr are appended to ``<name>.stderr`` in the run directory across
    restarts. ``expected_down`` is set while the nemesis keeps it down on purpose.
    """

    def __init__(self, name: str, module: str, args: list[str], rundir: Path) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", module, "--parent", str(os.getpid()), *args]
        self.stderr = rundir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.expected_down = False
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Start it (only from the main thread: the parent-death signal follows that thread)."""
        # The chaos package first; a PYTHONPATH already set (a gee-h source tree) kept after it.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the controller only, which stops us
            )
        self.expected_down = False
        self.paused = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig in (signal.SIGCONT, signal.SIGKILL):
            self.paused = False

    def kill(self) -> None:
        """SIGKILL, on purpose: it stays down until :meth:`start`."""
        self.expected_down = True
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def terminate(self) -> None:
        """Ask it to stop: SIGCONT (in case it is paused), then SIGTERM."""
        self.expected_down = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)


def stop_all(children: list[Child], grace: float) -> dict[str, str]:
    """Stop every child: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns the children that did not exit cleanly by themselves, with what happened.
    """
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace
    while any(c.running() for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    unclean = {}
    for child in children:
        if child.running():
            child.kill()
            unclean[child.name] = f"still running {grace:g}s after SIGTERM: killed"
        elif child.proc is not None and child.proc.returncode != 0:
            unclean[child.name] = f"exited with {child.proc.returncode} on SIGTERM"
    return unclean

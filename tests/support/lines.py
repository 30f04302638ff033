"""A child process whose output lines are read with bounded waits."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from collections.abc import Sequence

import pytest


class LineProcess:
    """Start ``argv``; ``line(timeout)`` returns the next stdout line or fails the test."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = 10.0, what: str = "a line") -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.argv[0]}: no output after {timeout}s waiting for {what}")
        if line is None:
            self._lines.put(None)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            pytest.fail(f"{self.argv[0]} exited ({self.proc.wait()}) before {what}: {err}")
        return line

    def interrupt(self, timeout: float = 10.0) -> int:
        """SIGINT, then wait for the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)

    def __enter__(self) -> LineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

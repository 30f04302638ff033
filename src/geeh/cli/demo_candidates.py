"""The demo's candidates: each a ``geeh elect`` process, started, followed and stopped.

A candidate is a real process, so that the demo can SIGKILL a leader. Its output is read as
it comes: its first stdout line is its own word that it was elected (timed for the failover
table), its stderr lines are passed on, and its exit is reported, all through ``say``: the
demo's timestamped line. Stopping them is bounded: SIGTERM (each resigns), SIGKILL after
:data:`STOP_GRACE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Say = Callable[[str], None]

STOP_GRACE = 5.0  # seconds a candidate gets to resign and exit after SIGTERM


@dataclass
class Candidate:
    """One `geeh elect` process."""

    name: str
    process: asyncio.subprocess.Process
    elected_at: float | None = None
    elected: asyncio.Event = field(default_factory=asyncio.Event)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @classmethod
    async def start(cls, name: str, command: list[str], say: Say) -> Candidate:
        """Start ``command`` as candidate ``name``; its output is told through ``say``."""
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Not in the terminal's process group: on Ctrl-C the demo stops them in order.
            start_new_session=True,
        )
        candidate = cls(name, process)
        candidate.readers = [
            asyncio.ensure_future(candidate._read_stdout(say)),
            asyncio.ensure_future(candidate._read_stderr(say)),
        ]
        return candidate

    async def _read_stdout(self, say: Say) -> None:
        assert self.process.stdout is not None
        key = await self.process.stdout.readline()
        if key:
            self.elected_at = time.monotonic()
            self.elected.set()
            await self.process.stdout.readline()  # the value line
            say(f"{self.name}: elected, says its `geeh elect` ({key.decode().strip()})")
        await self.process.wait()
        status = self.process.returncode
        assert status is not None
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"status {status}"
        say(f"{self.name}: exited ({how})")

    async def _read_stderr(self, say: Say) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            say(f"{self.name} (stderr): {line.decode(errors='replace').rstrip()}")


async def stop_all(candidates: list[Candidate], say: Say) -> None:
    """SIGTERM to every live candidate (each resigns), SIGKILL after STOP_GRACE; then let
    their readers finish what they print."""
    live = [c for c in candidates if c.alive]
    if live:
        say(f"SIGTERM -> {', '.join(c.name for c in live)}: each resigns and exits")
    for candidate in live:
        with contextlib.suppress(ProcessLookupError):
            candidate.process.send_signal(signal.SIGTERM)
    for candidate in live:
        try:
            await asyncio.wait_for(candidate.process.wait(), STOP_GRACE)
        except TimeoutError:
            say(f"{candidate.name} did not exit within {STOP_GRACE:g} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                candidate.process.kill()
            await candidate.process.wait()
    readers = [t for c in candidates for t in c.readers]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 1)
    for task in readers:
        task.cancel()

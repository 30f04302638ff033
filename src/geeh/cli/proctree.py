"""CMD's process tree, as ``geeh run`` sees it: started and stopped through a watchdog.

geeh does not start CMD itself: a small watchdog process (:mod:`geeh.cli.watchdog`) does, and
holds the only reading end of a pipe whose writing end only geeh holds. When geeh dies, by
SIGKILL or a crash, the pipe closes and the watchdog stops the whole tree at once. The
watchdog is the tree's subreaper, so processes that double-fork or ``setsid`` are still
found. It also knows the lease's local deadline, so a geeh that is frozen (SIGSTOP, a paused
VM) cannot keep CMD running past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sys
from pathlib import Path

WATCHDOG = Path(__file__).with_name("watchdog.py")
SIGTERM = signal.SIGTERM  # (in the class, ``signal`` is a method's name)


class CommandTree:
    """CMD and everything it starts; gone when :meth:`wait` returns.

    Use :meth:`start`. Every request is a line on the watchdog's control pipe: harmless
    after the watchdog exited.
    """

    def __init__(self, watchdog: asyncio.subprocess.Process, control: int, pid: int) -> None:
        self._watchdog = watchdog
        self._control = control
        self.pid = pid  # CMD's

    @classmethod
    async def start(cls, command: list[str], env: dict[str, str], grace: float) -> CommandTree:
        """Start CMD (in a process group of its own) under a watchdog.

        Raises OSError as starting CMD directly would (FileNotFoundError: no such command).
        """
        control_read, control_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            watchdog = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                str(WATCHDOG),
                str(control_read),
                str(status_write),
                repr(grace),
                "--",
                *command,
                env=env,
                pass_fds=(control_read, status_write),
                # Not in geeh's group: a terminal's Ctrl-C or hang-up reaches geeh, which
                # decides; the watchdog only obeys geeh, or geeh's death.
                process_group=0,
            )
        except BaseException:
            os.close(control_write)
            os.close(status_read)
            raise
        finally:
            os.close(control_read)
            os.close(status_write)
        try:
            answer = await _first_line(status_read)
        except BaseException:
            os.close(control_write)  # the watchdog stops whatever it started
            raise
        match answer.split():
            case ["started", pid]:
                return cls(watchdog, control_write, int(pid))
            case ["error", number]:
                code = int(number)
                os.close(control_write)
                await watchdog.wait()
                raise OSError(code, os.strerror(code))
        os.close(control_write)
        await watchdog.wait()
        raise OSError(errno.ECHILD, f"the watchdog of {command[0]} failed to start it")

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # the watchdog has exited: the tree is gone
            os.write(self._control, line.encode() + b"\n")

    def set_deadline(self, at: float) -> None:
        """The lease's local deadline (``geeh.session.now()`` clock): the tree ends by then."""
        self._send(f"deadline {at!r}")

    def signal(self, signum: int) -> None:
        """Pass ``signum`` to CMD's process group."""
        self._send(f"signal {int(signum)}")

    def stop(self, grace: float, signum: int = SIGTERM) -> None:
        """``signum`` to the whole tree now, SIGKILL to what is left after ``grace`` seconds.

        A stop already begun keeps its first signal; its SIGKILL only comes closer.
        """
        self._send(f"stop {max(0.0, grace)!r} {int(signum)}")

    async def wait(self) -> int:
        """Wait until no process of the tree is left; CMD's status (128+N: killed by signal N).

        CMD's exit starts the stop of the rest of its tree (with the watchdog's grace).
        """
        code = await self._watchdog.wait()
        if code < 0:  # the watchdog itself was killed; CMD had PDEATHSIG: make sure of it
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            return 128 - code
        return code

    @property
    def done(self) -> bool:
        return self._watchdog.returncode is not None

    def close(self) -> None:
        """Drop the control pipe: the watchdog stops the tree, as if geeh had died."""
        if self._control >= 0:
            os.close(self._control)
            self._control = -1


async def _first_line(fd: int) -> str:
    """The first line from a pipe ('' if the writer closed it first); closes ``fd``."""
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", 0)
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        return (await reader.readline()).decode(errors="replace")
    finally:
        transport.close()

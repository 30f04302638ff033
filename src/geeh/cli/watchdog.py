"""The watchdog between ``geeh run`` and CMD: nothing CMD starts outlives geeh's leadership.

Run as a script (standard library only, so it starts in milliseconds), by
:mod:`geeh.cli.proctree`::

    python -I -S watchdog.py CONTROL_FD STATUS_FD GRACE -- CMD [ARGS...]

It makes itself a child subreaper (Linux), so every process CMD starts stays its descendant
even after a double fork or ``setsid``, starts CMD in a process group of its own (with
``PR_SET_PDEATHSIG``, so CMD dies if the watchdog is killed), writes ``started PID`` (or
``error ERRNO``) to STATUS_FD, then reads lines from CONTROL_FD:

  ``deadline T``  the lease's local deadline (CLOCK_BOOTTIME): SIGTERM to the tree at
                  T - GRACE, SIGKILL at T, whether or not geeh is still there (frozen, say)
  ``signal N``    pass signal N to CMD's process group
  ``stop G [N]``  stop the tree: SIGTERM (or signal N) to every process of it, then SIGKILL
                  after G seconds (or at the deadline, if that comes first)

End of file on CONTROL_FD (geeh exited or was killed), a stop signal, or CMD's exit stops the
tree in the same way, with GRACE. Once no process of the tree is left, the watchdog exits with
CMD's status as a shell reports it (128+N for signal N).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POLL = 0.05  # seconds between looks at the tree and the clock
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
HAVE_PROC = os.path.isdir("/proc/self")

if hasattr(time, "CLOCK_BOOTTIME"):

    def now() -> float:
        """The clock geeh's sessions keep their deadlines on."""
        return time.clock_gettime(time.CLOCK_BOOTTIME)

else:  # pragma: no cover - not Linux

    def now() -> float:
        """The clock geeh's sessions keep their deadlines on."""
        return time.monotonic()


def prctl(option: int, value: int) -> bool:
    """Linux's prctl(2); False where it is missing or refused (other systems: degrade)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants(root: int) -> set[int]:
    """Live (not zombie) descendants of ``root``, from /proc; empty where there is no /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Watchdog:
    """CMD's tree, its deadline, and the stop: SIGTERM, a grace, SIGKILL."""

    def __init__(self, control: int, status: int, grace: float) -> None:
        self.control = control
        self.status = status
        self.grace = grace
        self.child: subprocess.Popen[bytes] | None = None
        self.pid = 0  # CMD's
        self.exit_code: int | None = None  # CMD's status, once reaped
        self.deadline: float | None = None
        self.kill_at: float | None = None  # set once the stop began
        self.stop_requested = False  # by a signal to the watchdog itself
        self.buffer = b""
        # Orphans of the tree become our children (Linux); elsewhere they are lost to init.
        prctl(PR_SET_CHILD_SUBREAPER, 1)

    def start(self, command: list[str]) -> bool:
        parent = os.getpid()

        def in_child() -> None:  # the watchdog is single-threaded: safe between fork and exec
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the watchdog died before prctl took effect
                os._exit(1)

        try:
            # Kept referenced: a Popen collected would reap CMD itself, and its status be lost.
            self.child = subprocess.Popen(command, process_group=0, preexec_fn=in_child)
        except OSError as err:
            self.tell(f"error {err.errno or errno.ENOEXEC}")
            return False
        self.pid = self.child.pid
        self.tell(f"started {self.pid}")
        os.close(self.status)
        return True

    def tell(self, line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.status, line.encode() + b"\n")

    def run(self) -> int:
        while True:
            self.read_control()
            self.reap()
            if self.exit_code is not None or self.stop_requested:
                self.stop(self.grace)
            clock = now()
            if self.deadline is not None and clock >= self.deadline - self.grace:
                self.stop(self.deadline - clock)
            if self.kill_at is not None:
                tree = self.tree()
                if not tree and self.exit_code is not None:
                    return self.exit_code
                if not tree and clock >= self.kill_at:  # CMD's status was lost: say killed
                    return self.exit_code or 128 + signal.SIGKILL
                if clock >= self.kill_at:
                    self.signal_tree(tree, signal.SIGKILL)

    def read_control(self) -> None:
        if self.control < 0:  # closed: wait for the tree only
            time.sleep(POLL)
            return
        ready, _, _ = select.select([self.control], [], [], POLL)
        if not ready:
            return
        data = os.read(self.control, 4096)
        if not data:  # geeh has gone: nothing may outlive it
            os.close(self.control)
            self.control = -1
            self.stop(self.grace)
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                self.command(line.decode(errors="replace").split())

    def command(self, words: list[str]) -> None:
        match words:
            case ["deadline", at]:
                self.deadline = float(at)
            case ["signal", signum]:
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, int(signum))
            case ["stop", grace]:
                self.stop(float(grace))
            case ["stop", grace, signum]:
                self.stop(float(grace), int(signum))

    def reap(self) -> None:
        """Reap CMD and every orphan of its tree that came to us (we are their subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                self.exit_code = 128 - code if code < 0 else code

    def tree(self) -> set[int]:
        """Every live process of CMD's tree (without /proc: CMD, or what is left of its group)."""
        if HAVE_PROC:
            return descendants(os.getpid())
        if self.exit_code is None:
            return {self.pid}
        try:
            os.killpg(self.pid, 0)
        except OSError:
            return set()
        return {self.pid}

    def stop(self, grace: float, signum: int = signal.SIGTERM) -> None:
        """Begin the stop (``signum`` now, SIGKILL after ``grace``), or bring SIGKILL closer."""
        kill_at = now() + max(0.0, grace)
        if self.deadline is not None:
            kill_at = min(kill_at, self.deadline)
        if self.kill_at is None:
            self.kill_at = kill_at
            self.signal_tree(self.tree(), signum)
        else:
            self.kill_at = min(self.kill_at, kill_at)

    def signal_tree(self, tree: set[int], signum: int) -> None:
        """``signum`` once to each process of the tree: CMD's group at once, then each one
        that left the group (some programs take a second SIGTERM for "stop now")."""
        wake = signum != signal.SIGKILL  # a stopped process would not see it
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signum)
            if wake:
                os.killpg(self.pid, signal.SIGCONT)
        for pid in tree:
            if pid == self.pid and self.exit_code is not None:
                continue  # reaped: the pid may belong to someone else by now
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == self.pid:
                    continue  # signalled with the group
                os.kill(pid, signum)
                if wake:
                    os.kill(pid, signal.SIGCONT)


def main(argv: list[str]) -> int:
    control, status, grace = int(argv[1]), int(argv[2]), float(argv[3])
    command = argv[5:]
    watchdog = Watchdog(control, status, grace)

    def stop_requested(signum: int, frame: object) -> None:
        watchdog.stop_requested = True

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_requested)
    if not watchdog.start(command):
        return 127  # geeh reports the error it was told, with a shell's status for it
    return watchdog.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

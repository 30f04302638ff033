"""Fork safety: gRPC channels do not survive ``fork()``.

A child process inherits the parent's gRPC objects but not the threads that serve them (the
asyncio poller thread, gRPC's own threads, a completion queue's loop thread), so a call
through them would wait forever. Every gee-h object that owns channels or a loop thread
records the pid it was made in and raises :class:`~geeh.ForkedError` when used in another.

Closing such an object in a child only drops it: resigning or revoking would go through the
parent's channels. The inherited gRPC objects are kept alive here, because their destructors
call into gRPC state that only the parent can serve (in the child they block or crash).

A child of a process that had used gRPC cannot open channels of its own either: gRPC's
asyncio stack keeps one process-wide completion queue, served by a thread that the child
lacks, and gRPC's internal locks may have been held by threads that the child lacks. A
client made in such a child fails with a ForkedError at once instead of hanging.

While gRPC's asyncio thread runs, a fork costs a full garbage collection in the parent (gRPC
garbage must be destroyed there, not in the child), and the child freezes what it inherited
(``gc.freeze()``) so that none of it is ever collected there.
"""

from __future__ import annotations

import gc
import os
import threading

from .errors import ForkedError

__all__ = ["abandon", "channel_opened", "check", "forked"]

_kept: list[object] = []  # gRPC objects inherited from the parent: never destroyed here
_used_grpc = False  # gee-h opened a channel in this process (gRPC is initialised)
_grpc_parent: int | None = None  # the pid of the ancestor that had used gRPC before a fork
_poller_at_fork = False


def check(pid: int, what: str) -> None:
    """Raise ForkedError if ``what``, created in process ``pid``, is used in another one."""
    if pid != os.getpid():
        raise ForkedError(
            f"{what} was created in process {pid} and cannot be used in process "
            f"{os.getpid()}, forked from it: gRPC channels and threads do not survive "
            "fork(). Create the client (or completion queue) after forking, in the "
            "process that uses it."
        )


def forked(pid: int) -> bool:
    """True if an object created in process ``pid`` now lives in a forked child."""
    return pid != os.getpid()


def abandon(*things: object) -> None:
    """Keep inherited gRPC objects alive for good, so their destructors never run here."""
    _kept.extend(things)


def channel_opened() -> None:
    """Note a channel about to be opened; ForkedError if gRPC cannot work in this process."""
    global _used_grpc
    if _grpc_parent is not None:
        raise ForkedError(
            f"gRPC cannot be used in this process (pid {os.getpid()}): it was forked from "
            f"process {_grpc_parent} after gRPC had been used there, and gRPC's state "
            "(its asyncio poller thread, its locks) does not survive fork(). Create gee-h "
            "clients only in processes forked before any client was made (in a pre-fork "
            "server: not at import time, not in the master), or start worker processes "
            "with the 'spawn' or 'forkserver' method."
        )
    _used_grpc = True


def _grpc_poller_running() -> bool:
    # grpc.aio's thread: threading.Thread(target=PollerCompletionQueue._poll_wrapper).
    return any(t.name.endswith("(_poll_wrapper)") for t in threading.enumerate())


def _before_fork() -> None:
    global _poller_at_fork
    _poller_at_fork = _grpc_poller_running()
    if _poller_at_fork:
        gc.collect()  # gRPC garbage is destroyed here, in the parent, not in the child


def _after_fork_in_child() -> None:
    global _grpc_parent
    if _poller_at_fork:
        gc.freeze()  # never destroy inherited gRPC objects here: see the module's docstring
    if (_used_grpc or _poller_at_fork) and _grpc_parent is None:
        _grpc_parent = os.getppid()  # a grandchild inherits the broken state too


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)

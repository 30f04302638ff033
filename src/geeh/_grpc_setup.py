"""gRPC settings gee-h chooses where the user has not: gRPC reads them once, when it loads.

Set only while ``grpc`` is imported, then removed again, so that processes started from here
(``geeh run``'s command) see the user's own environment. Nothing is done if the user set a
variable, or imported gRPC before gee-h.
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {
    # gRPC's own fork handlers (on in grpcio's builds) do not support its asyncio stack:
    # with a channel open, a forked child may crash at random, even one that never uses
    # gRPC. gee-h never uses inherited channels (see fork.py).
    "GRPC_ENABLE_FORK_SUPPORT": "false",
    # gRPC's C core logs each failed TLS handshake on stderr at INFO; gee-h reports those
    # failures itself, with their cause (net/diagnose.py).
    "GRPC_VERBOSITY": "ERROR",
}


def _is_geeh_command() -> bool:
    """The ``geeh`` command (console script or ``python -m geeh.cli``) is loading gee-h."""
    argv = getattr(sys, "orig_argv", sys.argv)
    if sys.argv and os.path.basename(sys.argv[0]) == "geeh":
        return True
    return len(argv) > 2 and argv[1] == "-m" and argv[2].split(".")[0] == "geeh"


if "grpc" not in sys.modules:
    _chosen = {name: value for name, value in DEFAULTS.items() if name not in os.environ}
    if "GRPC_VERBOSITY" in _chosen and _is_geeh_command():
        # The command's stderr is its one-line messages; gRPC's errors are in them already.
        _chosen["GRPC_VERBOSITY"] = "NONE"
    os.environ.update(_chosen)
    try:
        import grpc  # noqa: F401
    finally:
        for _name in _chosen:
            os.environ.pop(_name, None)

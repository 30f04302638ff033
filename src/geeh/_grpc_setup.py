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

if "grpc" not in sys.modules:
    _chosen = [name for name in DEFAULTS if name not in os.environ]
    os.environ.update({name: DEFAULTS[name] for name in _chosen})
    try:
        import grpc  # noqa: F401
    finally:
        for _name in _chosen:
            os.environ.pop(_name, None)

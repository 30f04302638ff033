"""gRPC settings gee-h chooses where the user has not: gRPC reads them once, when it loads.

Set only while ``grpc`` is imported, then removed again, so that processes started from here
(``geeh run``'s command) see the user's own environment. Nothing is done if the user set a
variable, or imported gRPC before gee-h.

``import geeh`` does not load gRPC (its names are imported on first use): it installs an
import hook instead, which applies the settings whenever gRPC first loads afterwards, by
gee-h or by anyone else, as if ``import geeh`` had loaded it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

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


def _chosen() -> dict[str, str]:
    chosen = {name: value for name, value in DEFAULTS.items() if name not in os.environ}
    if "GRPC_VERBOSITY" in chosen and _is_geeh_command():
        # The command's stderr is its one-line messages; gRPC's errors are in them already.
        chosen["GRPC_VERBOSITY"] = "NONE"
    return chosen


class _WithSettings:  # an importlib Loader (not its ABC: importlib.abc costs 10 ms)
    """grpc's own loader, run with the settings in the environment, then put back."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        chosen = _chosen()
        os.environ.update(chosen)
        try:
            self.loader.exec_module(module)
        finally:
            for name in chosen:
                os.environ.pop(name, None)
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader


class _OnGrpcImport:  # an importlib MetaPathFinder
    """Finds nothing itself: wraps the loader of ``grpc``, the first time it is imported."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "grpc":
            return None
        uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithSettings(spec.loader)  # type: ignore[assignment]
        return spec


_hook = _OnGrpcImport()


def install() -> None:
    """Apply the settings when gRPC loads, unless it is loaded already."""
    if "grpc" not in sys.modules and _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)


def uninstall() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


install()

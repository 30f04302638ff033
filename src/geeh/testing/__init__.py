"""Test leader-elected services against a real etcd, with faults: ``gee-h[testing]``.

Local etcd clusters (:class:`LocalEtcdCluster`) with fault helpers (kill, restart,
pause, blackhole, delay, partition, compact, expire), the TCP fault proxy
(:class:`TcpProxy`), TLS certificates made per run (:class:`CertificateAuthority`), and a
pytest plugin (``geeh.testing.plugin``, loaded through the ``pytest11`` entry point) with
the ``etcd`` and ``etcd_factory`` fixtures.

Not part of the runtime: ``import geeh`` never imports this package. Its names are
imported on first use (standard library only); trustme when a TLS cluster is made.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import EtcdCluster, FaultUnavailable
    from .binaries import EtcdNotFound, etcd_version, find_etcd, find_etcdctl
    from .cluster import EtcdFactory, LocalEtcdCluster
    from .external import ExternalEtcd
    from .members import EtcdStartError
    from .probes import EtcdRequestError, free_port, free_ports
    from .proxy import TcpProxy
    from .tls import CertFiles, CertificateAuthority, ClusterTls

# Imported on first use, so that pytest loading the plugin (geeh.testing.plugin) pays for
# this package's __init__ only.
_WHERE = {
    "CertFiles": "tls",
    "CertificateAuthority": "tls",
    "ClusterTls": "tls",
    "EtcdCluster": "base",
    "EtcdFactory": "cluster",
    "EtcdNotFound": "binaries",
    "EtcdRequestError": "probes",
    "EtcdStartError": "members",
    "ExternalEtcd": "external",
    "FaultUnavailable": "base",
    "LocalEtcdCluster": "cluster",
    "TcpProxy": "proxy",
    "etcd_version": "binaries",
    "find_etcd": "binaries",
    "find_etcdctl": "binaries",
    "free_port": "probes",
    "free_ports": "probes",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "CertFiles",
    "CertificateAuthority",
    "ClusterTls",
    "EtcdCluster",
    "EtcdFactory",
    "EtcdNotFound",
    "EtcdRequestError",
    "EtcdStartError",
    "ExternalEtcd",
    "FaultUnavailable",
    "LocalEtcdCluster",
    "TcpProxy",
    "etcd_version",
    "find_etcd",
    "find_etcdctl",
    "free_port",
    "free_ports",
]

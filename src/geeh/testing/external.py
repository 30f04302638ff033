"""An etcd the tests were pointed at (``--etcd-endpoints``) instead of one they run."""

from __future__ import annotations

from collections.abc import Iterable

from .base import EtcdCluster

__all__ = ["ExternalEtcd"]


class ExternalEtcd(EtcdCluster):
    """An etcd cluster running elsewhere, reached at *endpoints* (``"HOST:PORT"``).

    ``compact()``, ``expire(lease)`` and ``etcdctl()`` work (plain HTTP only); the fault
    methods raise :class:`~geeh.testing.FaultUnavailable`, since nothing here can freeze
    or kill its members.
    """

    def __init__(self, endpoints: Iterable[str]) -> None:
        cleaned = [e.strip() for e in endpoints if e.strip()]
        if not cleaned:
            raise ValueError("ExternalEtcd needs at least one endpoint")
        for e in cleaned:
            host, sep, port = e.rpartition(":")
            if "://" in e or not sep or not host or not port.isdigit():
                raise ValueError(f"etcd endpoint {e!r} is not HOST:PORT")
        self._endpoints = cleaned

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def __repr__(self) -> str:
        return f"<ExternalEtcd {self._endpoints}>"

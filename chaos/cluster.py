"""The test tooling the chaos run borrows: a local etcd cluster and a fault-injecting proxy.

Kept in one place so that moving them (to ``geeh.testing``) changes two imports here.
"""

from __future__ import annotations

from geeh.testing import LocalEtcdCluster, TcpProxy, find_etcd, find_etcdctl

__all__ = ["LocalEtcdCluster", "TcpProxy", "find_etcd", "find_etcdctl"]

"""How gee-h reaches etcd: endpoints, the pinned member and failover, retry rules, auth, streams.

Nothing here knows about elections; everything above reaches etcd through a
:class:`~geeh.net.failover.Transport`.
"""

"""The network between a test and a local cluster: a TCP proxy in front of each member's
client port and of its peer (raft) port, for blackholes, delays and partitions."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from .members import Member
from .probes import LOCALHOST
from .proxy import TcpProxy

_PEER_URLS_HEADER = b"x-peerurls:"


class Network:
    """The proxies of one cluster's members; they live as long as the cluster."""

    def __init__(self, members: Sequence[Member]) -> None:
        self._members = list(members)
        self._by_peer_url: dict[str, int] = {}
        #: True once a fault was set, until heal().
        self.faulted = False
        try:
            for m in self._members:
                m.client_proxy = TcpProxy(LOCALHOST, m.client_port).start()
                m.peer_proxy = TcpProxy(LOCALHOST, m.peer_port, classify=self._sender).start()
                self._by_peer_url[m.peer_proxy.url] = m.index
        except BaseException:
            self.close()
            raise

    def _sender(self, head: bytes) -> Hashable | None:
        """The member that opened a peer connection, from its X-PeerURLs header.

        etcd sets the header on raft streams and raft messages; requests without it
        (version and membership checks) are never blocked.
        """
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(_PEER_URLS_HEADER):
                for url in line[len(_PEER_URLS_HEADER) :].decode("latin-1").split(","):
                    index = self._by_peer_url.get(url.strip())
                    if index is not None:
                        return index
        return None

    def retarget(self) -> None:
        """Point every proxy at its member's current ports (after new ports were picked)."""
        for m in self._members:
            assert m.client_proxy is not None and m.peer_proxy is not None
            m.client_proxy.target_port = m.client_port
            m.peer_proxy.target_port = m.peer_port

    def client_proxy(self, i: int) -> TcpProxy:
        proxy = self._members[i].client_proxy
        assert proxy is not None
        return proxy

    def blackhole(self, i: int) -> None:
        self.faulted = True
        self.client_proxy(i).blackhole()

    def delay(self, i: int, seconds: float) -> None:
        self.faulted = True
        self.client_proxy(i).delay(seconds)

    def partition(self, client_side: Iterable[int]) -> None:
        """Cut the members outside *client_side* off from the client and from the members
        inside it; each side keeps talking within itself."""
        inside = set(client_side)
        self.faulted = True
        for m in self._members:
            assert m.client_proxy is not None and m.peer_proxy is not None
            mine = m.index in inside
            others = {o.index for o in self._members if (o.index in inside) != mine}
            m.peer_proxy.block(others)
            if mine:
                m.client_proxy.pass_through()
            else:
                m.client_proxy.blackhole()

    def heal(self) -> None:
        """Every proxy forwards everything again."""
        for m in self._members:
            for proxy in (m.client_proxy, m.peer_proxy):
                if proxy is not None:
                    proxy.block(())
                    proxy.pass_through()
        self.faulted = False

    def close(self) -> None:
        for m in self._members:
            for proxy in (m.client_proxy, m.peer_proxy):
                if proxy is not None:
                    proxy.close()

"""Endpoints: what users write ("host:port", "http://host:port", "https://host:port", lists).

The scheme says whether a client speaks TLS, as in etcdctl: ``https://`` does, ``http://``
does not, and a bare ``host:port`` does when TLS settings are given. One client speaks one of
the two to every member, so a list that mixes the schemes is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument

DEFAULT_ENDPOINT = "127.0.0.1:2379"


@dataclass(frozen=True)
class Endpoints:
    """Members as "host:port", and whether their URLs asked for TLS (None: no scheme given)."""

    addresses: list[str]
    secure: bool | None


def parse_endpoints(endpoints: str | Sequence[str] | None) -> Endpoints:
    """Normalise endpoints: one string (comma-separated allowed) or a sequence of them."""
    if endpoints is None:
        return Endpoints([DEFAULT_ENDPOINT], None)
    if isinstance(endpoints, str):
        items: Iterable[Any] = endpoints.split(",")
    elif isinstance(endpoints, Sequence):
        items = endpoints
    else:
        raise InvalidArgument(
            f"endpoints must be a string or a sequence of strings, not {type(endpoints).__name__}"
        )
    result: list[str] = []
    schemes: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"endpoint {item!r} is not a string")
        text = item.strip()
        if not text:
            continue
        scheme, sep, rest = text.partition("://")
        if sep:
            if scheme not in ("http", "https"):
                raise InvalidArgument(f"endpoint {text!r}: the scheme must be http or https")
            schemes.setdefault(scheme, text)
            text = rest
        text = text.rstrip("/")
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(f"endpoint {item!r} is not of the form host:port")
        if not 0 < int(port) < 65536:
            raise InvalidArgument(f"endpoint {item!r}: port {port} is out of range (1-65535)")
        if text not in result:
            result.append(text)
    if not result:
        raise InvalidArgument("no etcd endpoint given")
    if len(schemes) > 1:
        raise InvalidArgument(
            f"endpoints mix TLS and plaintext ({schemes['https']} and {schemes['http']}): "
            "a client speaks one of them to every member"
        )
    secure = None if not schemes else "https" in schemes
    return Endpoints(result, secure)

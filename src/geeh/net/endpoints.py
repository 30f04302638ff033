"""Endpoints: what users write ("host:port", "http://host:port", comma-separated lists)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import InvalidArgument

DEFAULT_ENDPOINT = "127.0.0.1:2379"


def parse_endpoints(endpoints: str | Sequence[str] | None) -> list[str]:
    """Normalise endpoints to "host:port" strings.

    Accepts one string (comma-separated allowed) or a sequence; "http://" prefixes are dropped.
    """
    if endpoints is None:
        return [DEFAULT_ENDPOINT]
    if isinstance(endpoints, str):
        items: Iterable[Any] = endpoints.split(",")
    elif isinstance(endpoints, Sequence):
        items = endpoints
    else:
        raise InvalidArgument(
            f"endpoints must be a string or a sequence of strings, not {type(endpoints).__name__}"
        )
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"endpoint {item!r} is not a string")
        text = item.strip()
        if not text:
            continue
        if text.startswith("https://"):
            raise InvalidArgument(f"endpoint {text!r}: TLS endpoints are not supported yet")
        text = text.removeprefix("http://").rstrip("/")
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"endpoint {item!r} is not of the form host:port")
        if text not in result:
            result.append(text)
    if not result:
        raise InvalidArgument("no etcd endpoint given")
    return result

"""Text in the blocking API: etcd's bytes as ``str``, with no byte lost either way.

As in the C++ gee-h, keys and values are ``str`` in the blocking API (the asyncio API uses
bytes). etcd's bytes are decoded as UTF-8 with ``errors="surrogateescape"``: a byte that is
not valid UTF-8 is kept as a surrogate escape, so ``text.encode("utf-8", "surrogateescape")``
gives back exactly the bytes etcd holds, and such a str passed back in (to ``proclaim``, say)
is written as those same bytes.
"""

from __future__ import annotations

from .keys import to_bytes


def text(data: bytes) -> str:
    """etcd's bytes as the blocking API's str: UTF-8, any other byte kept as an escape."""
    return data.decode("utf-8", "surrogateescape")


def raw(value: str | bytes, what: str) -> bytes:
    """The bytes a str or bytes argument stands for (the inverse of :func:`text`)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return to_bytes(value, what)

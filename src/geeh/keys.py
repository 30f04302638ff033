"""Key helpers for etcd's election recipe: the byte layout gee-h shares with Go and etcdctl."""

from __future__ import annotations

from .errors import InvalidArgument


def to_bytes(value: str | bytes, what: str) -> bytes:
    """Accept str (encoded as UTF-8) or bytes; anything else is an InvalidArgument naming it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument(f"{what} must be str or bytes, not {type(value).__name__}")


def election_prefix(name: str | bytes) -> bytes:
    """The key prefix of election ``name``: the name and a slash.

    The slash keeps "foo" and "foo1" apart: their candidates live under "foo/" and "foo1/".
    """
    raw = to_bytes(name, "election name")
    if not raw:
        raise InvalidArgument("election name must not be empty")
    return raw + b"/"


def candidate_key(prefix: bytes, lease: int) -> bytes:
    """A candidate's key: the prefix and its lease ID in lowercase hex, unpadded (Go's %x)."""
    return prefix + format(lease, "x").encode()


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``.

    Increment the last byte below 0xff and drop what follows; an all-0xff prefix has no
    upper bound, which etcd spells "\\x00".
    """
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def show(key: bytes) -> str:
    """A key as text for messages: UTF-8, undecodable bytes escaped."""
    return key.decode(errors="backslashreplace")

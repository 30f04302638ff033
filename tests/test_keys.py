"""Unit tests of the key layout shared with etcd's Go recipe."""

from __future__ import annotations

import pytest

from geeh.errors import InvalidArgument
from geeh.keys import candidate_key, election_prefix, prefix_end, to_bytes


def test_prefix_has_a_slash_so_foo_and_foo1_never_collide() -> None:
    foo, foo1 = election_prefix("foo"), election_prefix("foo1")
    assert foo == b"foo/"
    assert not foo1.startswith(foo)
    assert not (foo <= foo1 < prefix_end(foo))


def test_candidate_key_is_lowercase_unpadded_hex_like_go() -> None:
    assert candidate_key(b"e/", 0x694D7A1B2C3D4E5F) == b"e/694d7a1b2c3d4e5f"
    assert candidate_key(b"e/", 0xAB) == b"e/ab"


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"foo/", b"foo0"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff\xff", b"\x00")],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_names_and_values_accept_str_and_bytes_only() -> None:
    assert to_bytes("é", "value") == "é".encode()
    assert to_bytes(b"\x00", "value") == b"\x00"
    with pytest.raises(InvalidArgument, match="value must be str or bytes, not int"):
        to_bytes(5, "value")  # type: ignore[arg-type]


def test_empty_election_name_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="election name must not be empty"):
        election_prefix("")

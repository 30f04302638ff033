"""Leader: who leads an election, as a reader sees it."""

from __future__ import annotations

from dataclasses import dataclass

from ._proto import kv_pb2 as kv


@dataclass(frozen=True, slots=True)
class Leader:
    """The leader of an election at some revision.

    ``token`` is the leader key's create revision: the fencing token, which strictly increases
    from one leader to the next. ``revision`` is the key's last modification (it moves on
    proclaim).
    """

    key: bytes
    value: bytes
    token: int
    lease: int
    revision: int

    @classmethod
    def from_kv(cls, item: kv.KeyValue) -> Leader:
        return cls(item.key, item.value, item.create_revision, item.lease, item.mod_revision)

    @property
    def key_str(self) -> str:
        """The key as text (candidate keys are ASCII unless the election name is not)."""
        return self.key.decode(errors="replace")

    @property
    def value_str(self) -> str:
        """The value decoded as UTF-8, with undecodable bytes replaced."""
        return self.value.decode(errors="replace")

"""A periodic schedule's state in etcd, beside its election, claimed with fenced writes.

Each entry has one key, ``<election>-schedule/<entry name>``, holding JSON: when it last ran
(``last_run_at``, seconds since the epoch), how often (``total_run_count``) and the fencing
token of the leader that claimed that run. The keys sit outside the election's prefix
(``<election>/``), so they are never taken for candidates.

A leader claims a run with one Txn fenced on its leadership (its key still has its token)
and guarded on the entry's key being unchanged since it read it. If another leader has
taken over, the claim raises :class:`~geeh.NotLeader` and writes nothing; if the entry moved
on (the reading was stale), the claim returns None and the fresh state.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from . import kv
from .client import Client
from .errors import InvalidArgument
from .leadership import Leadership

SUFFIX = "-schedule/"


@dataclass(frozen=True)
class EntryState:
    """One entry's last run, as etcd holds it (``version``: the key's version, 0 if none)."""

    last_run_at: float | None = None
    total_run_count: int = 0
    token: int = 0
    version: int = 0

    def encode(self) -> bytes:
        fields = {
            "last_run_at": self.last_run_at,
            "total_run_count": self.total_run_count,
            "token": self.token,
        }
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def decode(cls, item: kv.KeyValue) -> EntryState:
        """The state a stored key holds; a value that is not ours reads as never run."""
        try:
            data = json.loads(item.value)
            last = data.get("last_run_at")
            return cls(
                float(last) if last is not None else None,
                int(data.get("total_run_count", 0)),
                int(data.get("token", 0)),
                item.version,
            )
        except (ValueError, TypeError, AttributeError):
            return cls(version=item.version)


class ScheduleStore:
    """Read and claim the state of the entries of the schedule beside election ``name``."""

    def __init__(self, name: str) -> None:
        if not name:
            raise InvalidArgument("the election name must not be empty")
        self.prefix = (name.rstrip("/") + SUFFIX).encode()

    def key(self, entry: str) -> bytes:
        """The key of ``entry``'s state."""
        return self.prefix + entry.encode("utf-8", "surrogateescape")

    async def load(self, client: Client) -> dict[str, EntryState]:
        """Every stored entry's state, by entry name."""
        found = await client.get_prefix(self.prefix)
        return {
            item.key[len(self.prefix) :].decode("utf-8", "surrogateescape"): EntryState.decode(item)
            for item in found
        }

    async def claim(
        self,
        leadership: Leadership,
        entry: str,
        seen: EntryState,
        last_run_at: float,
        total_run_count: int,
    ) -> tuple[bool, EntryState]:
        """Record a run of ``entry`` if we lead and its state is still ``seen``.

        Returns (True, the new state) once claimed; (False, the state found) if it had
        changed. Raises NotLeader, writing nothing, if leadership has moved on; an
        EtcdError if etcd did not answer (the claim may or may not have been applied).
        """
        key = self.key(entry)
        new = EntryState(last_run_at, total_run_count, leadership.token)
        result = await leadership.txn(
            [kv.version(key) == seen.version], [kv.put(key, new.encode())], [kv.get(key)]
        )
        if result.succeeded:
            return True, dataclasses.replace(new, version=seen.version + 1)
        items: list[kv.KeyValue] = result.responses[0]
        return False, EntryState.decode(items[0]) if items else EntryState()

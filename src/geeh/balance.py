"""The balance rule of sharded leadership, and the view of etcd's state it is applied to.

Every member reads the same keys under ``NAME/`` and applies the same rule, so all agree on
who should lead each shard without talking to each other:

- members are the keys ``NAME/members/<lease>``, in join order (create revision);
- with M members and N shards, the first N % M members in join order get ceil(N/M) shards,
  the others floor(N/M);
- a shard stays with its owner while the owner is a member with room (no needless moves);
- every other shard goes, in shard order, to the first member in join order with room left.

The moves this asks for are the fewest the quotas allow: a shard moves only if its owner left
or holds more than its quota.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._proto import kv_pb2

MEMBERS = b"members"


@dataclass(frozen=True, slots=True)
class Owner:
    """The key that leads a shard (the lowest create revision in its line)."""

    key: bytes
    value: bytes
    token: int
    lease: int


@dataclass(slots=True)
class View:
    """The state of a sharded election at ``revision``, as read from its keys."""

    revision: int
    count: int
    members: list[int] = field(default_factory=list)  # member leases, in join order
    values: dict[int, bytes] = field(default_factory=dict)  # member lease -> its value
    owners: dict[int, Owner] = field(default_factory=dict)  # shard -> who leads it
    lines: dict[int, dict[int, bytes]] = field(default_factory=dict)  # shard -> lease -> key

    def held(self) -> dict[int, int]:
        """How many shards each lease leads (members with none included)."""
        counts = dict.fromkeys(self.members, 0)
        for owner in self.owners.values():
            counts[owner.lease] = counts.get(owner.lease, 0) + 1
        return counts

    def balanced(self) -> bool:
        """Every shard led by a member, each member within floor/ceil of N/M."""
        if not self.members or len(self.owners) < self.count:
            return False
        held = self.held()
        low = self.count // len(self.members)
        high = -(-self.count // len(self.members))
        members = set(self.members)
        return all(o.lease in members for o in self.owners.values()) and all(
            low <= held[m] <= high for m in self.members
        )


def parse(prefix: bytes, count: int, revision: int, kvs: list[kv_pb2.KeyValue]) -> View:
    """The view from every key under ``prefix`` (``NAME/``); keys of no shard are ignored."""
    view = View(revision, count)
    members: list[tuple[int, int]] = []
    for item in kvs:
        head, _, tail = item.key[len(prefix) :].partition(b"/")
        try:
            lease = int(tail, 16)
        except ValueError:
            continue
        if head == MEMBERS:
            members.append((item.create_revision, lease))
            view.values[lease] = item.value
            continue
        if not head.isdigit() or not 0 <= int(head) < count:
            continue
        shard = int(head)
        view.lines.setdefault(shard, {})[lease] = item.key
        owner = view.owners.get(shard)
        if owner is None or item.create_revision < owner.token:
            view.owners[shard] = Owner(item.key, item.value, item.create_revision, lease)
    view.members = [lease for _, lease in sorted(members)]
    return view


def assign(count: int, members: list[int], owners: dict[int, int]) -> list[int | None]:
    """Who should lead each shard: the balance rule (see the module's docstring).

    ``members`` in join order, ``owners`` maps shard -> the lease leading it now.
    """
    if not members:
        return [None] * count
    base, extra = divmod(count, len(members))
    room = {m: base + (1 if i < extra else 0) for i, m in enumerate(members)}
    plan: list[int | None] = [None] * count
    for shard in range(count):
        owner = owners.get(shard)
        if owner in room and room[owner] > 0:
            plan[shard] = owner
            room[owner] -= 1
    takers = iter(members)
    taker = next(takers)
    for shard in range(count):
        if plan[shard] is None:
            while room[taker] == 0:
                taker = next(takers)
            plan[shard] = taker
            room[taker] -= 1
    return plan

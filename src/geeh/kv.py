"""A small typed KV surface for a leader's own data: get, put, delete and txn.

::

    from geeh import kv

    await client.put(b"config/mode", b"active")
    item = await client.get(b"config/mode")             # kv.KeyValue or None
    result = await client.txn(
        [kv.value(b"config/mode") == b"active"],          # compares
        [kv.put(b"config/mode", b"draining")],            # ops if all compares hold
        [kv.get(b"config/mode")],                         # ops otherwise
    )

As leader, use the fenced forms instead (``leadership.put``, ``leadership.txn``): the same
Txn also checks that our candidate key is still the one created at our token, so a deposed
leader writes nothing. Writes follow etcd's retry rule: a Put, Delete or Txn that may have
reached etcd is never sent again (its outcome is unknown; read to find out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._proto import kv_pb2
from ._proto import rpc_pb2 as rpc
from .errors import InvalidArgument
from .keys import prefix_end, show, to_bytes
from .net.failover import Transport
from .net.retry import DELETE, PUT, RANGE, TXN

Bytes = str | bytes


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, item: kv_pb2.KeyValue) -> KeyValue:
        return cls(
            item.key, item.value, item.create_revision, item.mod_revision, item.version, item.lease
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    """What a Txn did: which branch ran, at which revision, and each op's result.

    ``responses[i]`` is a list of KeyValue for a get, the number of keys deleted for a
    delete, None for a put, and a TxnResult for a nested txn.
    """

    succeeded: bool
    revision: int
    responses: list[Any]


class Compare:
    """One condition of a Txn; build it with :func:`value`, :func:`version` and friends."""

    __slots__ = ("pb",)

    def __init__(self, pb: rpc.Compare) -> None:
        self.pb = pb

    def __repr__(self) -> str:
        return f"<Compare {self.pb.key!r} {rpc.Compare.CompareTarget.Name(self.pb.target)}>"


class Target:
    """The left side of a comparison: ``kv.version(key) > 0`` makes a :class:`Compare`."""

    def __init__(self, key: Bytes, target: Any, field: str) -> None:
        self._key = to_bytes(key, "key")
        self._target = target
        self._field = field

    def _make(self, result: Any, operand: Any) -> Compare:
        if self._field == "value":
            operand = to_bytes(operand, "value")
        elif isinstance(operand, bool) or not isinstance(operand, int):
            raise InvalidArgument(
                f"compare {self._field} with an int, not {type(operand).__name__}"
            )
        pb = rpc.Compare(key=self._key, target=self._target, result=result)
        setattr(pb, self._field, operand)
        return Compare(pb)

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._make(rpc.Compare.EQUAL, other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._make(rpc.Compare.NOT_EQUAL, other)

    def __gt__(self, other: object) -> Compare:
        return self._make(rpc.Compare.GREATER, other)

    def __lt__(self, other: object) -> Compare:
        return self._make(rpc.Compare.LESS, other)

    __hash__ = None  # type: ignore[assignment]


def value(key: Bytes) -> Target:
    """Compare the key's value (bytes or str)."""
    return Target(key, rpc.Compare.VALUE, "value")


def version(key: Bytes) -> Target:
    """Compare the key's version (0 = absent)."""
    return Target(key, rpc.Compare.VERSION, "version")


def create_revision(key: Bytes) -> Target:
    """Compare the key's create revision (0 = absent): the fencing guard compares this."""
    return Target(key, rpc.Compare.CREATE, "create_revision")


def mod_revision(key: Bytes) -> Target:
    """Compare the revision of the key's last modification."""
    return Target(key, rpc.Compare.MOD, "mod_revision")


def lease(key: Bytes) -> Target:
    """Compare the lease the key is attached to (0 = none)."""
    return Target(key, rpc.Compare.LEASE, "lease")


class Op:
    """One op of a Txn: made by :func:`get`, :func:`put`, :func:`delete` or :func:`txn`."""

    __slots__ = ("pb",)

    def __init__(self, pb: rpc.RequestOp) -> None:
        self.pb = pb


# A user's Txn is not built to be repeatable: once it may have reached etcd, it is not resent
# (TXN's own rule, IF_UNSENT: see net/retry.py).
USER_TXN = TXN


def _range_end(key: bytes, prefix: bool) -> bytes:
    return prefix_end(key) if prefix else b""


def get(key: Bytes, *, prefix: bool = False) -> Op:
    """Read ``key`` (or every key starting with it)."""
    k = to_bytes(key, "key")
    return Op(rpc.RequestOp(request_range=rpc.RangeRequest(key=k, range_end=_range_end(k, prefix))))


def put(key: Bytes, data: Bytes, *, lease: int = 0) -> Op:
    """Write ``data`` to ``key`` (attached to ``lease`` if given)."""
    request = rpc.PutRequest(key=to_bytes(key, "key"), value=to_bytes(data, "value"), lease=lease)
    return Op(rpc.RequestOp(request_put=request))


def delete(key: Bytes, *, prefix: bool = False) -> Op:
    """Delete ``key`` (or every key starting with it)."""
    k = to_bytes(key, "key")
    request = rpc.DeleteRangeRequest(key=k, range_end=_range_end(k, prefix))
    return Op(rpc.RequestOp(request_delete_range=request))


def txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> Op:
    """A nested Txn (etcd 3.3+), as one op of an outer one."""
    return Op(rpc.RequestOp(request_txn=txn_request(compares, success, failure)))


def txn_request(
    compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
) -> rpc.TxnRequest:
    """The TxnRequest for ``compares``, ``success`` and ``failure``; checks their types."""
    for item in compares:
        if not isinstance(item, Compare):
            raise InvalidArgument(f"compares must be kv.Compare objects, not {type(item).__name__}")
    for op in (*success, *failure):
        if not isinstance(op, Op):
            raise InvalidArgument(f"ops must be kv.Op objects, not {type(op).__name__}")
    return rpc.TxnRequest(
        compare=[c.pb for c in compares],
        success=[o.pb for o in success],
        failure=[o.pb for o in failure],
    )


def refuse_under(prefix: bytes, ops: Sequence[Op]) -> None:
    """Raise InvalidArgument if an op writes or deletes a key under an election's ``prefix``.

    A key there with no lease is, to the election recipe, the oldest candidate: it would
    lead forever and block the election, so a leader's fenced write must go elsewhere.
    """
    for op in ops:
        for key, end in _writes(op.pb):
            if _overlaps(key, end, prefix):
                name = show(prefix[:-1])
                raise InvalidArgument(
                    f"refusing to write {show(key)}: it is under election {name}'s prefix "
                    f"{show(prefix)}, where a key without a lease blocks the election; "
                    "write outside the prefix"
                )


def _writes(op: rpc.RequestOp) -> list[tuple[bytes, bytes]]:
    """The (key, range_end) of every put and delete in ``op``, nested txns included."""
    kind = op.WhichOneof("request")
    if kind == "request_put":
        return [(op.request_put.key, b"")]
    if kind == "request_delete_range":
        return [(op.request_delete_range.key, op.request_delete_range.range_end)]
    if kind == "request_txn":
        inner = [*op.request_txn.success, *op.request_txn.failure]
        return [w for item in inner for w in _writes(item)]
    return []


def _overlaps(key: bytes, end: bytes, prefix: bytes) -> bool:
    """Whether [key, end) (a single key if ``end`` is empty) meets [prefix, prefix_end)."""
    if not end:
        return key.startswith(prefix)
    stop = prefix_end(prefix)
    below_stop = stop == b"\x00" or key < stop
    above_start = end == b"\x00" or end > prefix
    return below_stop and above_start


def txn_result(response: rpc.TxnResponse, revision: int | None = None) -> TxnResult:
    """Turn etcd's TxnResponse into a :class:`TxnResult`."""
    results: list[Any] = []
    for op in response.responses:
        kind = op.WhichOneof("response")
        if kind == "response_range":
            results.append([KeyValue.from_pb(item) for item in op.response_range.kvs])
        elif kind == "response_delete_range":
            results.append(op.response_delete_range.deleted)
        elif kind == "response_txn":
            results.append(txn_result(op.response_txn, response.header.revision))
        else:
            results.append(None)
    header = response.header.revision if response.HasField("header") else revision or 0
    return TxnResult(response.succeeded, header, results)


class KV:
    """get, put, delete and txn on a transport; the Client and Leadership expose these."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def get(self, key: Bytes) -> KeyValue | None:
        """The key, or None if it does not exist."""
        k = to_bytes(key, "key")
        response = await self._transport.call(RANGE, rpc.RangeRequest(key=k), what="get")
        return KeyValue.from_pb(response.kvs[0]) if response.kvs else None

    async def get_prefix(self, prefix: Bytes) -> list[KeyValue]:
        """Every key starting with ``prefix``, in key order."""
        k = to_bytes(prefix, "prefix")
        request = rpc.RangeRequest(key=k, range_end=_range_end(k, True))
        response = await self._transport.call(RANGE, request, what="get")
        return [KeyValue.from_pb(item) for item in response.kvs]

    async def put(self, key: Bytes, data: Bytes, *, lease: int = 0) -> int:
        """Write ``data`` to ``key``; returns the revision of the write."""
        request = put(key, data, lease=lease).pb.request_put
        return (await self._transport.call(PUT, request, what="put")).header.revision

    async def delete(self, key: Bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it); returns the revision of the delete."""
        request = delete(key, prefix=prefix).pb.request_delete_range
        return (await self._transport.call(DELETE, request, what="delete")).header.revision

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        what: str = "txn",
    ) -> TxnResult:
        """If every compare holds, run ``success``, else ``failure``: atomically."""
        request = txn_request(compares, success, failure)
        return txn_result(await self._transport.call(USER_TXN, request, what=what))

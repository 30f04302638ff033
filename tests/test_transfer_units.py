"""Transfer over scripted fakes: the order of the hand-over's answer and our key's deletion
event, which a real etcd does not let a test choose (test_transfer.py has the real runs)."""

from __future__ import annotations

import asyncio

import pytest
from support.fakes import fake_core, fake_leadership, fake_session

import geeh
from geeh._proto import kv_pb2, rpc_pb2
from geeh.net.retry import RANGE, TXN

TARGET = b"fake/abc"


def line(own: bytes) -> rpc_pb2.RangeResponse:
    """Our key (token 5) and the target's (token 9): the target is next in line."""
    return rpc_pb2.RangeResponse(
        kvs=[
            kv_pb2.KeyValue(key=own, value=b"value", create_revision=5, lease=0x1234),
            kv_pb2.KeyValue(key=TARGET, value=b"target", create_revision=9, lease=0xABC),
        ]
    )


async def test_our_keys_deletion_seen_before_the_hand_overs_answer_is_not_a_loss() -> None:
    """The watcher reports our key deleted before the final Txn's answer arrives: that is
    the hand-over itself, so leadership ends as resigned (reason None), not as lost."""
    core, transport, _ = fake_core()
    gone: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    leadership = fake_leadership(core, await fake_session(core), gone=gone)
    transport.handlers[RANGE.path] = lambda r: line(leadership.key)
    txns = []

    async def txn(request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        txns.append(request)
        if len(txns) == 2:  # the hand-over: the deletion event is delivered first
            gone.set_result(geeh.CandidateRemoved("our key was deleted"))
            await asyncio.sleep(0)  # its callbacks run before the answer comes back
        return rpc_pb2.TxnResponse(succeeded=True)

    transport.handlers[TXN.path] = txn
    target = await leadership.transfer(to=b"target")
    assert target.key == TARGET
    assert leadership.lost.is_set() and leadership.lost.reason is None
    assert len(txns) == 2
    await core.close()


async def test_a_loss_during_a_failed_hand_over_stays_a_loss() -> None:
    """Our key went for another reason, and the hand-over found it gone: NotLeader, and the
    loss the watcher saw is the reason."""
    core, transport, _ = fake_core()
    gone: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    leadership = fake_leadership(core, await fake_session(core), gone=gone)
    transport.handlers[RANGE.path] = lambda r: line(leadership.key)
    calls = []

    async def txn(request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        calls.append(request)
        if len(calls) == 2:
            gone.set_result(geeh.CandidateRemoved("revoked by an operator"))
            await asyncio.sleep(0)
            empty = rpc_pb2.ResponseOp(response_range=rpc_pb2.RangeResponse())
            return rpc_pb2.TxnResponse(succeeded=False, responses=[empty])
        return rpc_pb2.TxnResponse(succeeded=True)

    transport.handlers[TXN.path] = txn
    with pytest.raises(geeh.NotLeader):
        await leadership.transfer(to=TARGET)
    assert isinstance(leadership.lost.reason, geeh.CandidateRemoved)
    await core.close()

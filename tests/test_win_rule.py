"""The win rule and the own-key watcher, under orderings a real etcd produces only by chance.

etcd orders events within one watch only: a watch that fell behind is served later from
history while the others on the same stream go ahead. A scripted member (support.fake_etcd)
delivers deletions to the waiting line's watches in exactly such orders. Each test names the
fault it pins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from support.fake_etcd import FakeEtcd, fake_client, installed
from support.wait import eventually, within

import geeh
from geeh.net.retry import RANGE
from geeh.win import Verdict, WinRule

NAME = "e"


def key(lease: int) -> bytes:
    return f"{NAME}/{lease:x}".encode()


# Lease IDs chosen for key order: PP < PRED < X < OURS, so the range spanning our key and the
# predecessor's holds X (a candidate behind us) and not PP (the key two places ahead).
PP, PRED, X, OURS = 0x30, 0x70, 0x75, 0x80


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEtcd]:
    async with installed(monkeypatch) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeEtcd) -> AsyncIterator[geeh.Client]:
    client = fake_client()
    try:
        yield client
    finally:
        await client.close()


def ranges(fake: FakeEtcd) -> int:
    return sum(1 for path, _ in fake.requests if path == RANGE.path)


async def queue_behind(
    fake: FakeEtcd, client: geeh.Client, *ahead: int
) -> tuple[asyncio.Future[geeh.Leadership], int, dict[int, int]]:
    """Candidates ``ahead`` hold keys; ours joins behind them and waits.

    Returns (our campaign, the ID of our own-key watch, ID of the line's watch by lease:
    the predecessor's is the ordered watch spanning our key and its own).
    """
    for lease in ahead:
        fake.leases[lease] = 60
        fake.put(key(lease), b"ahead", lease)
    fake.next_lease = OURS
    campaign = asyncio.ensure_future(client.election(NAME).campaign(b"ours", ttl=60))
    predecessor = ahead[-1]
    ordered = await eventually(
        lambda: fake.watch_on(key(predecessor), key(OURS) + b"\x00"), what="the ordered watch"
    )
    watches = {predecessor: ordered}
    for lease in ahead[:-1]:
        watches[lease] = await eventually(lambda: fake.watch_on(key(lease)), what="its watch")  # noqa: B023
    own = fake.watch_on(key(OURS))
    assert own is not None
    return campaign, own, watches


async def next_move(fake: FakeEtcd, campaign: asyncio.Future[Any]) -> None:
    """Wait until the campaign acted on what it was sent: it ended or sent a request."""
    sent = len(fake.requests)
    await eventually(lambda: campaign.done() or len(fake.requests) > sent, what="a move")


# -- the rule alone ---------------------------------------------------------------------------


def test_the_rule_leads_only_when_the_ordered_watch_is_past_every_deletion() -> None:
    rule = WinRule(b"ours", [b"pred", b"pp"], complete=True, read=9)
    assert rule.saw({b"pp"}, 12, ordered=False) is None
    assert rule.saw({b"pred"}, 10, ordered=True) is Verdict.CONFIRM
    assert rule.highest == 12
    in_order = WinRule(b"ours", [b"pred", b"pp"], complete=True, read=9)
    assert in_order.saw({b"pp"}, 10, ordered=False) is None
    assert in_order.saw({b"pred"}, 12, ordered=True) is Verdict.LEAD


def test_the_rule_never_gives_a_verdict_on_an_incomplete_line() -> None:
    rule = WinRule(b"ours", [b"pred", b"pp"], complete=False, read=9)
    assert rule.saw({b"pp"}, 10, ordered=False) is None
    assert rule.saw({b"pred"}, 11, ordered=True) is None


def test_the_rule_ends_the_campaign_on_our_own_deletion() -> None:
    rule = WinRule(b"ours", [b"pred"], complete=True, read=9)
    with pytest.raises(geeh.CandidateRemoved):
        rule.saw({b"pred", b"ours"}, 10, ordered=True)


# -- finding 2: a false win across two watches ----------------------------------------------


async def test_no_win_until_the_ordered_watch_passed_the_highest_deletion(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    """The stream delivers pp@12, then pred@10, then our own deletion @11 in a later
    response: pred@10 proves nothing about our key at 12, when the line was empty."""
    campaign, own, watches = await queue_behind(fake, client, PP, PRED)
    pred_gone = fake.delete(key(PRED))
    ours_gone = fake.delete(key(OURS))
    pp_gone = fake.delete(key(PP))
    fake.push(watches[PP], pp_gone)
    fake.push(watches[PRED], pred_gone)
    await next_move(fake, campaign)
    fake.push(watches[PRED], ours_gone)
    fake.push(own, ours_gone)
    with pytest.raises(geeh.CandidateRemoved):
        leadership = await within(campaign, 5, "the campaign to end")
        pytest.fail(f"a win it never had: {leadership}")


async def test_deletions_out_of_order_across_watches_still_win_once_confirmed(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    campaign, _, watches = await queue_behind(fake, client, PP, PRED)
    pred_gone = fake.delete(key(PRED))
    pp_gone = fake.delete(key(PP))
    fake.push(watches[PP], pp_gone)
    fake.push(watches[PRED], pred_gone)
    leadership = await within(campaign, 5, "the campaign to win")
    assert leadership.is_leader


async def test_deletions_in_order_win_without_a_read(fake: FakeEtcd, client: geeh.Client) -> None:
    """The ordered watch delivered through the highest deletion: no read is needed."""
    campaign, _, watches = await queue_behind(fake, client, PP, PRED)
    before = ranges(fake)
    fake.push(watches[PP], fake.delete(key(PP)))
    fake.push(watches[PRED], fake.delete(key(PRED)))
    leadership = await within(campaign, 5, "the campaign to win")
    assert leadership.is_leader
    assert ranges(fake) == before


async def crowd(fake: FakeEtcd, watches: dict[int, int]) -> int:
    """Delete X, a candidate behind us in the ordered range: the line moves to a watch on the
    predecessor's key alone (see win.py). Returns that watch's ID."""
    fake.leases[X] = 60
    fake.put(key(X), b"behind", X)
    fake.push(watches[PRED], fake.delete(key(X)))
    return await eventually(lambda: fake.watch_on(key(PRED)), what="the predecessor's own watch")


async def test_confirm_reads_at_or_after_the_highest_deletion(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    """CONFIRM's read must show our key at the highest deletion revision the line saw, not
    merely at the predecessor's: a member behind answers the serializable read at 10."""
    campaign, _, watches = await queue_behind(fake, client, PP, PRED)
    alone = await crowd(fake, watches)
    pred_gone = fake.delete(key(PRED))
    fake.delete(key(OURS))
    pp_gone = fake.delete(key(PP))
    fake.serializable_revision = pred_gone[0].kv.mod_revision
    fake.push(watches[PP], pp_gone)
    fake.push(alone, pred_gone)
    with pytest.raises(geeh.CandidateRemoved):
        leadership = await within(campaign, 5, "the campaign to end")
        pytest.fail(f"a win it never had: {leadership}")


async def test_a_crowded_range_keeps_a_deletion_queued_behind_it(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    """X's deletion and the predecessor's arrive together on the ordered watch: the watch
    that replaces it must start right after X's deletion, not after what the hub received."""
    campaign, _, watches = await queue_behind(fake, client, PRED)
    fake.leases[X] = 60
    fake.put(key(X), b"behind", X)
    fake.push(watches[PRED], fake.delete(key(X)))
    fake.push(watches[PRED], fake.delete(key(PRED)))
    leadership = await within(campaign, 5, "the campaign to win")
    assert leadership.is_leader


# -- finding 3: the own-key watcher never dies silently --------------------------------------


async def lead_alone(fake: FakeEtcd, client: geeh.Client) -> tuple[geeh.Leadership, int]:
    fake.next_lease = OURS
    leadership = await within(client.election(NAME).campaign(b"ours", ttl=60), 5, "a win")
    own = fake.watch_on(key(OURS))
    assert own is not None
    return leadership, own


def own_key_read(request: Any) -> bool:
    return bool(request.key == key(OURS) and not request.revision)


async def compact_under(fake: FakeEtcd, client: geeh.Client) -> None:
    """Compaction, then a reconnect: the own-key watch (it filters PUTs, so its revision never
    advances) is found compacted when the stream is re-opened, and its watcher re-reads."""
    fake.put(b"other", b"x")
    fake.compacted = fake.revision
    fake.break_watch_stream()


async def test_own_key_watcher_outlives_an_unavailable_reread_after_compaction(
    fake: FakeEtcd, client: geeh.Client
) -> None:
    leadership, _ = await lead_alone(fake, client)
    failures: list[BaseException] = []
    transport = client.core.transport
    call = transport.call

    async def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            return await call(*args, **kwargs)
        except geeh.EtcdUnavailable as err:
            failures.append(err)
            raise

    transport.call = spy  # type: ignore[method-assign]
    fake.fail(
        RANGE.path,
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: no leader",
        times=None,
        match=own_key_read,
    )
    await compact_under(fake, client)
    await eventually(lambda: failures, what="the re-read to fail with EtcdUnavailable")
    fake.heal()
    own = await eventually(lambda: fake.watch_on(key(OURS)), what="our key watched again")
    assert leadership.is_leader
    fake.push(own, fake.delete(key(OURS)))
    reason = await within(leadership.lost.wait(), 5, "the loss to be reported")
    assert isinstance(reason, geeh.CandidateRemoved)
    assert not leadership.is_leader


async def test_own_key_watcher_failure_is_a_loss(fake: FakeEtcd, client: geeh.Client) -> None:
    leadership, _ = await lead_alone(fake, client)
    fake.fail(
        RANGE.path,
        grpc.StatusCode.PERMISSION_DENIED,
        "etcdserver: permission denied",
        times=None,
        match=own_key_read,
    )
    await compact_under(fake, client)
    reason = await within(leadership.lost.wait(), 5, "the loss to be reported")
    assert isinstance(reason, geeh.CandidateRemoved)
    assert "permission denied" in str(reason)
    assert not leadership.is_leader
    await within(client.close(), 5, "the client to close after the loss")
    assert client.core.transport.closed

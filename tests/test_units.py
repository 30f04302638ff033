"""Fast unit tests of small parts, no etcd needed."""

from __future__ import annotations

import asyncio

import pytest

import geeh
from geeh.net.endpoints import Endpoints, parse_endpoints
from geeh.net.retry import Backoff
from geeh.session import check_ttl, safety_margin


async def test_loss_signal_keeps_the_first_reason_and_wakes_waiters() -> None:
    signal = geeh.LossSignal()
    waiter = asyncio.ensure_future(signal.wait())
    await asyncio.sleep(0)
    assert not signal.is_set() and not waiter.done()
    first = geeh.SessionExpired("first")
    assert signal.set(first) is True
    assert signal.set(geeh.CandidateRemoved("second")) is False
    assert await waiter is first
    assert await signal is first
    seen: list[BaseException | None] = []
    signal.add_callback(seen.append)  # already set: called at once
    assert seen == [first]


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    backoff = Backoff(base=0.1, cap=0.4)
    delays = [backoff.next_delay() for _ in range(50)]
    assert all(0 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 10, "jitter: delays must differ"
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_safety_margin_is_ten_percent_clamped() -> None:
    assert safety_margin(2) == pytest.approx(0.2)
    assert safety_margin(5) == pytest.approx(0.5)
    assert safety_margin(60) == 1.0
    assert safety_margin(1) == pytest.approx(0.1)


@pytest.mark.parametrize("ttl", [0, -1, 0.5, float("nan"), True, "5", None, 2.5])
def test_bad_ttls(ttl: object) -> None:
    with pytest.raises(geeh.InvalidArgument, match="ttl"):
        check_ttl(ttl)


def test_good_ttls() -> None:
    assert check_ttl(5) == 5
    assert check_ttl(5.0) == 5


def test_endpoints_are_normalised() -> None:
    assert parse_endpoints(None) == Endpoints(["127.0.0.1:2379"], secure=None)
    assert parse_endpoints("http://a:1, b:2,a:1") == Endpoints(["a:1", "b:2"], secure=False)
    assert parse_endpoints(["https://[::1]:2379/"]) == Endpoints(["[::1]:2379"], secure=True)


def test_error_hierarchy() -> None:
    assert issubclass(geeh.InvalidArgument, ValueError)
    assert issubclass(geeh.EtcdUnavailable, geeh.EtcdError)
    for error in (geeh.SessionExpired, geeh.CandidateRemoved, geeh.NotLeader):
        assert issubclass(error, geeh.ElectionError)
        assert issubclass(error, geeh.GeehError)

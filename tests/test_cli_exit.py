"""`geeh elect`'s exit is one bound, as `geeh run`'s: resign and close share it, not stack.

Run in this process against a real etcd behind a fault proxy, with etcd blackholed so that
every close step waits for as long as it is allowed. The steps are counted, with the time
each was given: together they must fit the exit's one bound (after a loss, a stop signal),
however long each would wait alone.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from support.wait import within

import geeh
from geeh.cli import build_parser, common, parse
from geeh.cli import elect as elect_command
from geeh.cli.common import (
    CLOSE_AFTER_LOSS_TIMEOUT,
    CLOSE_TIMEOUT,
    EXIT_LOST,
    EXIT_OK,
    Signals,
    resolve_connection,
)
from geeh.leadership import Leadership
from geeh.testing import LocalEtcdCluster, TcpProxy


@pytest.fixture
def close_steps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The time each close step (a bounded client close) of the command was given."""
    given: list[float] = []
    real = common.close_client

    async def recording(client: geeh.Client, timeout: float) -> None:
        given.append(timeout)
        await real(client, timeout)

    monkeypatch.setattr(common, "close_client", recording)
    monkeypatch.setattr(elect_command, "close_client", recording, raising=False)
    return given


@pytest.fixture
def elected(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the command has announced its win (its campaign returned)."""
    event = asyncio.Event()
    real = elect_command.announce

    def announce(leadership: Leadership) -> None:
        real(leadership)
        event.set()

    monkeypatch.setattr(elect_command, "announce", announce)
    return event


async def leading(proxy: TcpProxy, name: str, elected: asyncio.Event) -> asyncio.Task[int]:
    """`geeh elect NAME v --ttl 2` through ``proxy``, once it has announced its win."""
    args = parse(build_parser(), ["elect", "--endpoints", proxy.endpoint, name, "v", "--ttl", "2"])
    args.prog = "geeh elect"
    assert resolve_connection(args) is None
    signals = Signals()
    task = asyncio.ensure_future(elect_command.elect(args, signals))
    task.add_done_callback(lambda _: signals.close())
    await within(elected.wait(), 30, "geeh elect to lead")
    return task


async def test_elect_exits_within_one_bound_after_a_loss_on_a_blackholed_etcd(
    etcd: LocalEtcdCluster, name: str, close_steps: list[float], elected: asyncio.Event
) -> None:
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        task = await leading(proxy, name, elected)
        proxy.blackhole()  # no keepalive answered: the lease's local deadline ends it
        assert await within(task, 30, "geeh elect to exit after its loss") == EXIT_LOST
    # Before: a close after the loss (its own bound), then the full close bound again.
    assert close_steps, "the client was never closed"
    assert sum(close_steps) <= CLOSE_AFTER_LOSS_TIMEOUT, close_steps


async def test_elect_resigns_and_closes_within_one_bound_on_a_blackholed_etcd(
    etcd: LocalEtcdCluster, name: str, close_steps: list[float], elected: asyncio.Event
) -> None:
    with TcpProxy("127.0.0.1", etcd.client_port(0)) as proxy:
        task = await leading(proxy, name, elected)
        proxy.blackhole()
        os.kill(os.getpid(), signal.SIGTERM)  # to the command's handler: resign, then close
        assert await within(task, 30, "geeh elect to exit after SIGTERM") == EXIT_OK
    # The resign waited out the bound (etcd does not answer): the close gets what it left,
    # not a fresh bound of its own.
    assert len(close_steps) == 1, close_steps
    assert close_steps[0] < CLOSE_TIMEOUT / 2, close_steps

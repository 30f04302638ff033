"""Celery beat on gee-h (issue 18): real Celery beat processes, kombu's filesystem broker and
a real etcd. What reached the broker is counted per tick; the leader is killed, stopped, cut
off and paused between its claim and its send. The claim itself is tested on its own too."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.snippets import PLACEHOLDER, ROOT, parse
from support.wait import within

pytest.importorskip("celery")

import geeh
from benchmarks.beat_harness import (
    GEEH_SCHEDULER,
    Beats,
    Replica,
    count,
    geeh_env,
    wait_for,
)
from geeh.celery import BeatSettings
from geeh.schedule_state import EntryState, ScheduleStore
from geeh.testing import EtcdCluster

TTL = 2
INTERVAL = 1.0

# -- settings ------------------------------------------------------------------------------------


def test_settings_come_from_the_conf_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GEEH_ENDPOINTS", "ETCDCTL_ENDPOINTS", "GEEH_ELECTION", "GEEH_TTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "10.0.0.1:2379")
    monkeypatch.setenv("GEEH_TTL", "7")
    settings = BeatSettings.from_conf({})
    assert settings.endpoints == "10.0.0.1:2379"
    assert (settings.election, settings.ttl) == ("celery-beat", 7)
    assert settings.delivery == "at-most-once"
    conf = {"geeh_endpoints": ["a:1", "b:2"], "geeh_election": "jobs", "geeh_ttl": 3}
    settings = BeatSettings.from_conf(conf)
    assert (settings.endpoints, settings.election, settings.ttl) == ("a:1,b:2", "jobs", 3)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"geeh_ttl": "soon"}, "geeh_ttl='soon'"),
        ({"geeh_ttl": 0}, "geeh_ttl=0"),
        ({"geeh_delivery": "twice"}, "geeh_delivery='twice'"),
        ({"geeh_after_claim": 3}, "geeh_after_claim must be callable"),
        ({"geeh_insecure_transport": "maybe"}, "geeh_insecure_transport='maybe'"),
        (
            {"geeh_insecure_transport": "true", "geeh_cacert": "/ca.pem"},
            "geeh_insecure_transport conflicts with geeh_cacert",
        ),
        ({"geeh_cert": "/nonexistent.pem"}, "geeh_cert needs its key"),
        ({"geeh_cert": "/no.pem", "geeh_key": "/no.pem"}, "from geeh_cert, geeh_key"),
    ],
)
def test_bad_settings_are_named(conf: dict[str, object], message: str) -> None:
    with pytest.raises(geeh.InvalidArgument, match=message.replace("(", r"\(")):
        BeatSettings.from_conf(conf)


def test_beat_with_a_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "proj.py").write_text('from celery import Celery\napp = Celery("proj")\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), GEEH_TTL="soon")
    argv = [sys.executable, "-m", "celery", "-A", "proj", "beat", "-S", GEEH_SCHEDULER]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "geeh.celery: geeh_ttl='soon': could not convert string to float: 'soon'"
    ]


# -- the fenced claim ----------------------------------------------------------------------------


async def test_a_claim_is_fenced_and_guarded(client: geeh.Client, name: str) -> None:
    store = ScheduleStore(name)
    old = await within(client.election(name).campaign(b"old", ttl=5), 10, "the first leader")
    ok, state = await store.claim(old, "tick", EntryState(), 100.0, 1)
    assert ok and state == EntryState(100.0, 1, old.token, 1)
    # A claim made from a stale reading changes nothing and returns what etcd holds.
    ok, found = await store.claim(old, "tick", EntryState(), 101.0, 1)
    assert not ok and found == state
    successor = client.election(name).campaign(b"new", ttl=5)
    await client.delete(old.key)  # deposed, without knowing it yet
    new = await within(successor, 10, "the successor")
    with pytest.raises(geeh.NotLeader):
        await store.claim(old, "tick", state, 102.0, 2)
    assert await store.load(client) == {"tick": state}
    ok, state = await store.claim(new, "tick", state, 103.0, 2)
    assert ok and (await store.load(client))["tick"] == state
    # The state keys are not candidates of the election beside them.
    assert [c.key for c in await client.election(name).candidates()] == [new.key]
    await new.resign()


# -- the scheduler in this process, driven as beat drives it ------------------------------------


def boom(entry: str) -> None:
    raise RuntimeError(f"a hook that raises, after claiming {entry}")


def test_the_scheduler_claims_each_run_in_etcd_and_resigns_on_close(
    etcd: EtcdCluster, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from celery import Celery

    from geeh.celery import Scheduler

    sent: list[str] = []

    class Recording(Scheduler):
        def apply_async(self, entry: Any, producer: Any = None, **options: Any) -> Any:
            sent.append(entry.name)
            # What a sent task returns: Celery 5.3's beat logs its id.
            return types.SimpleNamespace(id=f"{entry.name}-{len(sent)}")

    app = Celery("t", broker="memory://")
    app.conf.update(
        geeh_endpoints=etcd.endpoints,
        geeh_election=name,
        geeh_ttl=2,
        geeh_after_claim=boom,  # raises: logged, and the run is sent all the same
        beat_schedule={"tick": {"task": "t.tick", "schedule": 0.1}},
    )
    scheduler = Recording(app=app)
    try:

        def three_sent() -> bool:
            time.sleep(min(scheduler.tick(), 0.1))  # beat's own loop: tick, sleep, tick
            return len(sent) >= 3

        wait_for(three_sent, 30, "three runs")
    finally:
        scheduler.close()
    assert "a hook that raises" in caplog.text
    store = ScheduleStore(name)

    async def stored() -> dict[str, EntryState]:
        async with geeh.Client(etcd.endpoints) as client:
            return await store.load(client)

    state = asyncio.run(stored())["tick"]
    assert state.total_run_count == len(sent) and state.token > 0
    assert etcd.keys(f"{name}/") == []  # resigned on close
    scheduler.close()  # harmless twice


# -- beat processes ------------------------------------------------------------------------------


@pytest.fixture
def beats(etcd: EtcdCluster, name: str, tmp_path: Path) -> Iterator[Beats]:
    targets = [(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in etcd.endpoints]
    env = {
        "GEEH_ELECTION": name,
        "BEAT_INTERVAL": str(INTERVAL),
        "BEAT_LOCK_TIMEOUT": str(TTL),
        "BEAT_PAUSE_FILE": str(tmp_path / "pause"),
    }
    made = Beats(GEEH_SCHEDULER, 3, targets, geeh_env, env, str(tmp_path))
    yield made
    made.close()


def started(beats: Beats, n: int) -> float:
    """Start ``n`` replicas; the wall time once ticks flow."""
    for replica in beats.replicas[:n]:
        beats.start(replica)
    wait_for(lambda: len(beats.messages()) >= 2, 60, "the first ticks")
    return beats.messages()[0].at


def ticks_after(beats: Beats, at: float, n: int, what: str) -> None:
    wait_for(lambda: len([m for m in beats.messages() if m.at > at]) >= n, 60, what)


def from_others(beats: Beats, replica: Replica, after: float) -> bool:
    return any(m.pid != replica.pid and m.at > after for m in beats.messages())


@pytest.mark.parametrize(
    "delivery", ["at-most-once", pytest.param("at-least-once", marks=pytest.mark.slow)]
)
def test_a_graceful_stop_hands_over_without_losing_a_tick(beats: Beats, delivery: str) -> None:
    for replica in beats.replicas:
        replica.env["GEEH_DELIVERY"] = delivery
    start = started(beats, 2)
    leader = beats.leader(start)
    at = time.time()
    beats.signal(leader, signal.SIGTERM)
    wait_for(lambda: from_others(beats, leader, at), 30, "the standby to send")
    ticks_after(beats, at, 4, "ticks after the hand-over")
    counts = count(beats.messages(), INTERVAL, start, time.time())
    assert (counts.twice, counts.missed) == (0, 0), (counts, beats.logs())
    assert leader.process is not None and leader.process.wait(10) == 0


@pytest.mark.slow
def test_a_killed_leader_is_replaced_and_no_tick_is_sent_twice(beats: Beats) -> None:
    start = started(beats, 3)
    leader = beats.leader(start)
    at = time.time()
    beats.signal(leader, signal.SIGKILL)
    wait_for(lambda: from_others(beats, leader, at), 30, "a standby to take over")
    ticks_after(beats, at, TTL + 4, "ticks after the take-over")
    counts = count(beats.messages(), INTERVAL, start, time.time())
    assert counts.twice == 0, (counts, beats.logs())
    assert beats.running() == 2


@pytest.mark.slow
def test_a_stopped_leader_comes_back_as_a_standby(beats: Beats) -> None:
    start = started(beats, 3)
    leader = beats.leader(start)
    beats.signal(leader, signal.SIGSTOP)
    at = time.time()
    wait_for(lambda: from_others(beats, leader, at), 30, "a standby to take over")
    time.sleep(TTL)  # the fault itself: 2 x TTL stopped
    resumed = time.time()
    beats.signal(leader, signal.SIGCONT)
    ticks_after(beats, resumed, 2 * TTL + 2, "ticks after the resume")
    messages = beats.messages()
    assert not [m for m in messages if m.pid == leader.pid and m.at > resumed]
    counts = count(messages, INTERVAL, start, time.time())
    assert counts.twice == 0, (counts, beats.logs())
    assert beats.running() == 3  # it did not exit: it stands by


@pytest.mark.slow
def test_a_beat_cut_off_from_etcd_stops_sending_and_campaigns_again(
    beats: Beats, etcd: EtcdCluster, name: str
) -> None:
    start = started(beats, 3)
    leader = beats.leader(start)
    beats.cut(leader)
    at = time.time()
    wait_for(lambda: from_others(beats, leader, at), 30, "a standby to take over")
    quiet = time.time()
    ticks_after(beats, quiet, 2, "ticks while it is cut off")
    assert not [m for m in beats.messages() if m.pid == leader.pid and m.at > quiet]
    beats.heal(leader)
    # It campaigns again by itself: three candidates once more.
    wait_for(lambda: len(etcd.keys(f"{name}/")) == 3, 30, "the healed beat to campaign again")
    counts = count(beats.messages(), INTERVAL, start, time.time())
    assert counts.twice == 0, (counts, beats.logs())
    assert beats.running() == 3


@pytest.mark.slow
def test_a_beat_deposed_between_claim_and_send_does_not_send(beats: Beats, tmp_path: Path) -> None:
    start = started(beats, 3)
    trigger = tmp_path / "pause"
    trigger.touch()  # the app's hook stops the beat that takes it, right after its claim
    paused = wait_for(
        lambda: next(
            (r for r in beats.replicas if r.running() and Path(f"{trigger}.{r.pid}").exists()),
            None,
        ),
        30,
        "a beat to stop between claim and send",
    )
    assert isinstance(paused, Replica)
    at = time.time()
    wait_for(lambda: from_others(beats, paused, at), 30, "a standby to take over")
    time.sleep(TTL)  # stopped for 2 x TTL in all: its session has expired
    resumed = time.time()
    beats.signal(paused, signal.SIGCONT)
    ticks_after(beats, resumed, TTL + 2, "ticks after the resume")
    messages = beats.messages()
    assert not [m for m in messages if m.pid == paused.pid and m.at > at - INTERVAL / 2]
    counts = count(messages, INTERVAL, start, time.time())
    assert counts.twice == 0, (counts, beats.logs())
    assert beats.running() == 3
    with open(paused.log_path, encoding="utf-8") as fh:
        assert "deposed before sending tick; not sent" in fh.read()


# -- the how-to: its app and its command, as a new user runs them ----------------------------


def howto() -> tuple[str, list[str]]:
    """The Celery how-to's app (proj.py) and its beat command."""
    page = parse(ROOT / "docs" / "howto" / "celery-beat.md")
    app = next(b.code for b in page.blocks if b.lang == "python")
    lines = [line for b in page.blocks if b.lang == "sh" for line in b.code.splitlines()]
    command = next(line.split("#")[0] for line in lines if line.startswith("celery "))
    return app, shlex.split(command)


def test_the_howto_gives_ha_beat(etcd: EtcdCluster, name: str, tmp_path: Path) -> None:
    app, argv = howto()
    app = app.replace(PLACEHOLDER, etcd.endpoints[0]).replace('"proj-beat"', repr(name))
    (tmp_path / "proj.py").write_text(app.replace("redis://localhost:6379/0", "memory://"))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    logs = [tmp_path / f"beat-{i}.log" for i in range(2)]
    processes = []
    try:
        for log in logs:
            with open(log, "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", *argv],
                        cwd=tmp_path,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        wait_for(lambda: len(etcd.keys(f"{name}/")) == 2, 60, "both beats to campaign")

        def leading() -> list[int]:
            return [i for i, log in enumerate(logs) if f"leading {name}" in log.read_text()]

        first = wait_for(leading, 30, "a beat to lead")
        assert isinstance(first, list) and len(first) == 1
        processes[first[0]].send_signal(signal.SIGTERM)
        assert processes[first[0]].wait(30) == 0
        wait_for(lambda: len(leading()) == 2, 30, "the other beat to take over")
    finally:
        for process in processes:
            process.kill()
            process.wait()

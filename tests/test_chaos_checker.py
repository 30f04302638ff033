"""The chaos checker on small hand-written runs: a clean run passes, each kind of violation
is counted under its own property."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos import checker

Records = list[dict[str, Any]]


def _etcd() -> Records:
    put, delete, reg = "put", "delete", "chaos-register"
    return [
        {"rev": 2, "type": put, "key": "chaos-election/a", "value": "w0", "create": 2},
        {"rev": 3, "type": put, "key": reg, "value": "2:w0:1", "create": 3},
        {"rev": 4, "type": put, "key": reg, "value": "2:w0:2", "create": 3},
        {"rev": 5, "type": delete, "key": "chaos-election/a", "value": "", "create": 0},
        {"rev": 6, "type": put, "key": "chaos-election/b", "value": "w1", "create": 6},
        {"rev": 7, "type": put, "key": reg, "value": "6:w1:1", "create": 3},
        {"rev": 8, "type": delete, "key": "chaos-election/b", "value": "", "create": 0},
    ]


def _act(token: int, value: str, start: float, end: float, rev: int) -> Records:
    return [
        {"ev": "try", "token": token, "value": value, "t": start},
        {"ev": "act", "token": token, "value": value, "start": start, "end": end, "rev": rev,
         "result": "ok", "t": end},
    ]  # fmt: skip


def clean_run() -> dict[str, Any]:
    """Two terms (tokens 2 and 6), a fault between them, everything consistent."""
    return {
        "run.json": {"ttl": 3},
        "controller.jsonl": [
            {"ev": "phase", "name": "faults", "t": 100.0},
            {"ev": "phase", "name": "stop", "t": 103.0},
        ],
        "faults.jsonl": [
            {"ev": "fault", "kind": "pause-leader", "start": 101.2, "end": 102.0, "t": 102.0}
        ],
        "w0.jsonl": [
            {"ev": "win", "token": 2, "t": 100.1, "valid": True},
            *_act(2, "2:w0:1", 100.2, 100.25, 3),
            *_act(2, "2:w0:2", 101.0, 101.05, 4),
            {"ev": "lost", "token": 2, "t": 101.5, "reason": "None"},
        ],
        "w1.jsonl": [
            {"ev": "win", "token": 6, "t": 102.0, "valid": True},
            *_act(6, "6:w1:1", 102.1, 102.2, 7),
        ],
        "o0.jsonl": [
            {"ev": "leader", "token": token, "t": t}
            for token, t in ((None, 99.0), (2, 100.1), (None, 101.5), (6, 102.0), (None, 103.0))
        ],
        "etcd.jsonl": _etcd(),
        "leftovers.json": {"keys": [], "leases": {}},
    }


def write(tmp_path: Path, run: dict[str, Any]) -> Path:
    for name, content in run.items():
        if name.endswith(".jsonl"):
            text = "".join(json.dumps(r) + "\n" for r in content)
        elif name.endswith(".json"):
            text = json.dumps(content)
        else:
            text = content
        (tmp_path / name).write_text(text)
    return tmp_path


def violations(tmp_path: Path, run: dict[str, Any]) -> dict[int, int]:
    results, _ = checker.check(write(tmp_path, run))
    return {int(r.name.split(".")[0]): r.violations for r in results}


NONE = dict.fromkeys(range(1, 10), 0)


def test_a_clean_run_passes(tmp_path: Path) -> None:
    assert violations(tmp_path, clean_run()) == NONE
    assert checker.report(tmp_path) == 0


def test_a_token_going_down_in_the_register(tmp_path: Path) -> None:
    run = clean_run()
    run["etcd.jsonl"].append({"rev": 9, "type": "put", "key": "chaos-register",
                              "value": "2:w0:3", "create": 3})  # fmt: skip
    run["w0.jsonl"] += _act(2, "2:w0:3", 100.5, 100.6, 9)
    assert violations(tmp_path, run)[1] == 1
    assert checker.report(tmp_path) == 1


def test_an_acknowledged_write_missing_and_a_write_nobody_tried(tmp_path: Path) -> None:
    run = clean_run()
    run["w1.jsonl"] += _act(6, "6:w1:2", 102.3, 102.4, 10)  # etcd has no rev 10
    run["etcd.jsonl"].append({"rev": 11, "type": "put", "key": "chaos-register",
                              "value": "6:w9:1", "create": 3})  # fmt: skip
    assert violations(tmp_path, run)[1] == 2


def test_an_action_started_after_a_newer_one_ended(tmp_path: Path) -> None:
    run = clean_run()
    run["w0.jsonl"].append({"ev": "try", "token": 2, "value": "2:w0:9", "t": 102.3})
    assert violations(tmp_path, run) == {**NONE, 2: 1}


def test_an_action_that_overlaps_a_newer_one_is_not_stale(tmp_path: Path) -> None:
    run = clean_run()
    run["w0.jsonl"].append({"ev": "try", "token": 2, "value": "2:w0:9", "t": 102.15})
    assert violations(tmp_path, run)[2] == 0


def test_wins_out_of_order_or_unknown_to_etcd(tmp_path: Path) -> None:
    run = clean_run()
    run["w0.jsonl"].append({"ev": "win", "token": 2, "t": 102.5, "valid": True})
    run["w1.jsonl"].append({"ev": "win", "token": 99, "t": 102.6, "valid": True})
    run["w1.jsonl"].append({"ev": "win", "token": 1, "t": 102.7, "valid": False})  # ignored
    assert violations(tmp_path, run)[3] == 2


def test_a_violation_right_after_a_thaw_points_at_the_etcd_bug(tmp_path: Path) -> None:
    run = clean_run()
    run["faults.jsonl"].append({"ev": "fault", "kind": "stop-member", "target": "m1 (raft leader)",
                                "start": 96.0, "end": 102.1, "t": 102.1})  # fmt: skip
    run["w0.jsonl"].append({"ev": "win", "token": 4, "t": 102.5, "valid": True})
    results, _ = checker.check(write(tmp_path, run))
    assert results[2].violations == 2  # out of order, and never a leader in etcd
    assert "m1 (raft leader) resumed 0.40s before: etcd-io/etcd#15247?" in results[2].examples[0]


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ([None, 2, None, None, 6, None], 0),  # a repeated report is one change
        ([None, 2, 6, None], 1),  # the "no leader" between them is missed
        ([None, 6, None], 2),  # 2 and its "no leader" missed
        ([None, 2, None, 6, 2, None], 2),  # 2 after 6: out of order, and not next in etcd
        ([None, 2, None], 2),  # stopped before the end: 6 and the last None missed
    ],
)
def test_observer_reports(tmp_path: Path, reports: list[int | None], expected: int) -> None:
    run = clean_run()
    run["o0.jsonl"] = [{"ev": "leader", "token": r, "t": 100 + i} for i, r in enumerate(reports)]
    assert violations(tmp_path, run)[4] == expected


def test_a_long_stretch_without_writes_needs_a_fault(tmp_path: Path) -> None:
    run = clean_run()
    run["controller.jsonl"][1]["t"] = 130.0  # nothing written from 102.2 to 130
    assert violations(tmp_path, run)[5] == 1
    run["faults.jsonl"].append({"ev": "fault", "kind": "quorum-loss", "start": 110.0,
                                "end": 120.0, "t": 120.0})  # fmt: skip
    assert violations(tmp_path, run)[5] == 0


def test_leftover_keys_and_leases(tmp_path: Path) -> None:
    run = clean_run()
    run["leftovers.json"] = {"keys": ["chaos-election/b"], "leases": {"123": 2}}
    assert violations(tmp_path, run)[6] == 2


def test_tracebacks_and_unexpected_exits(tmp_path: Path) -> None:
    run = clean_run()
    run["w1.stderr"] = "warning\nTraceback (most recent call last):\n  File x\nValueError: x\n"
    run["controller.jsonl"].append({"ev": "unexpected-exit", "proc": "w0", "code": 1, "t": 1})
    results, _ = checker.check(write(tmp_path, run))
    assert results[6].violations == 2
    assert "w1.stderr: ValueError: x" in results[6].examples


def _beats(token: int, start: float, end: float) -> Records:
    """Heartbeats of a `geeh run` tree: CMD and its child, every 0.1 s from start to end."""
    steps = round((end - start) / 0.1)
    return [
        {"ev": "beat", "token": token, "pid": 1000 + token + (role == "child"), "role": role,
         "t": start + i * 0.1}
        for i in range(steps + 1)
        for role in ("cmd", "child")
    ]  # fmt: skip


def with_runners() -> dict[str, Any]:
    """The clean run, plus two `geeh run` terms (tokens 20 and 30), one after the other."""
    run = clean_run()
    put, delete, reg = "put", "delete", "chaos-run-register"
    run["etcd.jsonl"] += [
        {"rev": 20, "type": put, "key": "chaos-run/a", "value": "r0", "create": 20},
        {"rev": 21, "type": put, "key": reg, "value": "20:r0:1", "create": 21},
        {"rev": 25, "type": delete, "key": "chaos-run/a", "value": "", "create": 0},
        {"rev": 30, "type": put, "key": "chaos-run/b", "value": "r1", "create": 30},
        {"rev": 31, "type": put, "key": reg, "value": "30:r1:1", "create": 21},
        {"rev": 32, "type": delete, "key": "chaos-run/b", "value": "", "create": 0},
    ]
    run["r0.jsonl"] = [
        *_beats(20, 100.0, 101.0),
        {"ev": "try", "token": 20, "value": "20:r0:1", "t": 100.2},
        {"ev": "act", "token": 20, "value": "20:r0:1", "start": 100.2, "end": 100.6,
         "result": "ok", "t": 100.6},
    ]  # fmt: skip
    run["r1.jsonl"] = [
        *_beats(30, 101.5, 102.5),
        {"ev": "try", "token": 30, "value": "30:r1:1", "t": 101.6},
        {"ev": "act", "token": 30, "value": "30:r1:1", "start": 101.6, "end": 102.0,
         "result": "ok", "t": 102.0},
    ]  # fmt: skip
    return run


def test_process_trees_one_after_the_other_pass(tmp_path: Path) -> None:
    assert violations(tmp_path, with_runners()) == NONE


def test_overlapping_process_trees_are_flagged(tmp_path: Path) -> None:
    run = with_runners()
    # The first leader's child lived on (its geeh died, say) past the second tree's start.
    run["r0.jsonl"] += [
        {"ev": "beat", "token": 20, "pid": 1021, "role": "child", "t": t} for t in (101.6, 101.7)
    ]
    results, _ = checker.check(write(tmp_path, run))
    assert results[7].violations == 1
    assert "r1 tree 30 beat at 1.500s while tree 20 (r0) beat until 1.700s" in results[7].examples


def test_a_write_by_a_deposed_tree_is_flagged(tmp_path: Path) -> None:
    run = with_runners()
    run["etcd.jsonl"].append({"rev": 33, "type": "put", "key": "chaos-run-register",
                              "value": "20:r0:2", "create": 21})  # fmt: skip
    run["r0.jsonl"].append({"ev": "try", "token": 20, "value": "20:r0:2", "t": 100.9})
    results, _ = checker.check(write(tmp_path, run))
    assert results[7].violations == 1
    assert "rev 33: 20:r0:2 written while token None led" in results[7].examples[0]


def _rbac(*records: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"ev": "start", "t": 99.0}, *records]


def rbac_run() -> dict[str, Any]:
    """Read on chaos-rbac-0 revoked from 101 to 108: its observer is refused, the others'
    observer sees every leader in time."""
    run = clean_run()
    run["faults.jsonl"].append({"ev": "fault", "kind": "revoke-read", "lane": "rbac",
                                "start": 101.0, "end": 108.0, "t": 108.0})  # fmt: skip
    run["rbac.jsonl"] = _rbac(
        {"ev": "wrote", "election": "chaos-rbac-1", "value": "v1", "t": 100.0},
        {"ev": "leader", "election": "chaos-rbac-1", "value": "v1", "t": 100.1},
        {"ev": "leader", "election": "chaos-rbac-1", "value": None, "t": 100.2},
        {"ev": "refused", "election": "chaos-rbac-0", "error": "permission denied", "t": 101.2},
        {"ev": "wrote", "election": "chaos-rbac-2", "value": "v2", "t": 102.0},
        {"ev": "leader", "election": "chaos-rbac-2", "value": "v2", "t": 102.1},
    )
    return run


def test_the_rbac_lane(tmp_path: Path) -> None:
    assert violations(tmp_path, rbac_run())[9] == 0
    late = rbac_run()
    late["rbac.jsonl"][-1]["t"] = 109.0  # v2 seen only after read was restored
    assert violations(tmp_path, late)[9] == 1
    missed = rbac_run()
    missed["rbac.jsonl"].pop()  # v2 never seen
    assert violations(tmp_path, missed)[9] == 1
    silent = rbac_run()
    del silent["rbac.jsonl"][4]  # the refused observer never ended
    assert violations(tmp_path, silent)[9] == 1


def test_an_rbac_fault_explains_no_stall_of_the_workers(tmp_path: Path) -> None:
    run = rbac_run()
    run["faults.jsonl"] = [f for f in run["faults.jsonl"] if f["kind"] == "revoke-read"]
    run["faults.jsonl"][0].update(start=102.3, end=129.0, t=129.0)
    run["controller.jsonl"][1]["t"] = 130.0  # nothing written from 102.2 to 130
    assert violations(tmp_path, run)[5] == 1

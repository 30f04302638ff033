"""Short chaos runs (about 45 s each): correct workers pass the checker, broken ones fail it.

The broken workers neither check ``is_leader`` nor fence their writes, and keep writing after
their leadership is lost: the checker must see deposed leaders' writes land in the register
after newer ones, and their actions start after newer leaders' actions ended.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def chaos(tmp_path: Path, *args: str) -> tuple[int, dict[int, int], str]:
    """Run ``python -m chaos``; its exit status, each property's violations, its output."""
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--seconds", "30", "--seed", "1", "--dir", str(tmp_path),
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    counts = {
        int(m[1]): int(m[2])
        for m in re.finditer(r"^(\d+)\. .*?: (\d+) violations", done.stdout, re.M)
    }
    return done.returncode, counts, done.stdout + done.stderr


def test_correct_workers_pass(tmp_path: Path) -> None:
    code, counts, output = chaos(tmp_path)
    assert counts == dict.fromkeys(range(1, 10), 0), output
    assert code == 0, output


def test_broken_workers_fail(tmp_path: Path) -> None:
    code, counts, output = chaos(tmp_path, "--broken")
    assert code == 1, output
    assert counts[1] > 0, output  # deposed leaders' writes after newer tokens
    assert counts[2] > 0, output  # and their actions after newer leaders' ended

"""Short sharded chaos runs (issue 19): correct members pass the checker, broken ones fail.

Broken members write unfenced and keep acting on a shard after it moved (or after a pause
past their TTL): the checker must see an older token's write after a newer one's in a
shard's register, and an older holder act after a newer one.
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
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--sharded", "--seconds", "30", "--seed", "1",
         "--dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    counts = {
        int(m[1]): int(m[2])
        for m in re.finditer(r"^(\d)\. .*?: (\d+) violations", done.stdout, re.M)
    }
    return done.returncode, counts, done.stdout + done.stderr


def test_correct_members_pass(tmp_path: Path) -> None:
    code, counts, output = chaos(tmp_path)
    assert counts == dict.fromkeys(range(1, 6), 0), output
    assert code == 0, output


def test_broken_members_fail(tmp_path: Path) -> None:
    code, counts, output = chaos(tmp_path, "--broken")
    assert code == 1, output
    assert counts[1] + counts[2] > 0, output

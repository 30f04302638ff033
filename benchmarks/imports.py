"""What starting gee-h costs: import time (``python -X importtime``) and what gets loaded.

``python -m benchmarks.imports [--runs N] [--json]``. Each case runs in a fresh interpreter,
``--runs`` times; the figure is the median of ``-X importtime``'s cumulative time for the
top-level modules the case imports, with the modules loaded and whether gRPC is among them.
Also the runner's ``imports`` stage (``python -m benchmarks --only imports``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

from .common import Config, jsonable

# name -> code run in a fresh interpreter
CASES = {
    "import geeh": "import geeh",
    "geeh --help": (
        "import contextlib, io\nfrom geeh.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])"
    ),
    "geeh elect --help": (
        "import contextlib, io\nfrom geeh.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['elect', '--help'])"
    ),
    "pytest plugin": "import geeh.testing.plugin",
    "geeh.Client (loads gRPC)": "import geeh\ngeeh.Client",
}


@dataclass(frozen=True)
class ImportCost:
    case: str
    seconds: float  # median over the runs
    modules: int  # modules loaded by the case, beyond the bare interpreter's
    grpc: bool  # gRPC among them


def _run(code: str) -> tuple[float, set[str]]:
    """One fresh interpreter: the summed top-level import times, and the modules loaded."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{code}\nimport sys\nprint(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    micros = 0
    for line in out.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"; top level: no indent.
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):
            micros += int(cumulative)
    return micros / 1e6, set(out.stdout.split())


def measure(runs: int = 5) -> list[ImportCost]:
    """Each case ``runs`` times in a fresh interpreter."""
    _, bare = _run("pass")
    costs = []
    for case, code in CASES.items():
        results = [_run(code) for _ in range(runs)]
        modules = results[-1][1] - bare
        grpc = any(m.split(".")[0] == "grpc" for m in modules)
        seconds = statistics.median(seconds for seconds, _ in results)
        costs.append(ImportCost(case, seconds, len(modules), grpc))
    return costs


async def run(cfg: Config) -> dict[str, list[ImportCost]]:
    """The runner's stage: every case, in fresh interpreters (fewer with --quick)."""
    return {"cases": await asyncio.to_thread(measure, cfg.n(7, 3))}


def main(argv: list[str] | None = None) -> int:
    from .report import TABLES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.imports", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per case")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    section = {"cases": jsonable(measure(max(1, args.runs)))}
    TABLES["imports"](section)
    print(json.dumps(section["cases"], indent=2) if args.json else section["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
from dataclasses import asdict, dataclass

from .common import Config

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
        costs.append(
            ImportCost(
                case,
                statistics.median(seconds for seconds, _ in results),
                len(modules),
                any(m.split(".")[0] == "grpc" for m in modules),
            )
        )
    return costs


async def run(cfg: Config) -> dict[str, list[ImportCost]]:
    """The runner's stage: every case, in fresh interpreters (fewer with --quick)."""
    return {"cases": await asyncio.to_thread(measure, 3 if cfg.quick else 7)}


def table(costs: list[ImportCost]) -> str:
    lines = ["| case | import time | modules | gRPC |", "|---|---:|---:|---|"]
    lines += [
        f"| {c.case} | {c.seconds * 1000:.0f} ms | {c.modules} | {'yes' if c.grpc else 'no'} |"
        for c in costs
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.imports", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per case")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    costs = measure(max(1, args.runs))
    print(json.dumps([asdict(c) for c in costs], indent=2) if args.json else table(costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

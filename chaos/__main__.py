"""``python -m chaos [--seconds S] [--seed N] ...``: one chaos run, then its check.

Exit status: 0 every property holds, 1 a property was violated, 2 bad arguments, 3 the run
itself failed (the message says why; every process is stopped either way).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import checker, shard_checker, sharded
from .controller import Options, execute
from .nemesis import schedule


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description="A seeded fault-injection soak test, then its check."
    )
    parser.add_argument("--seconds", type=_positive(float), default=60.0, help="fault phase")
    parser.add_argument("--seed", type=int, default=1, help="the schedule of faults")
    parser.add_argument("--workers", type=_positive(int), default=4)
    parser.add_argument(
        "--runners",
        type=int,
        default=2,
        help="process-level workers: `geeh run` with a job as CMD (0: none)",
    )
    parser.add_argument("--ttl", type=_positive(int), default=3, help="the workers' lease TTL")
    parser.add_argument("--broken", action="store_true", help="workers that skip the checks")
    parser.add_argument(
        "--freeze-raft-leader",
        action="store_true",
        help="let a member frozen past the TTL be the raft leader: etcd before its fix for "
        "etcd-io/etcd#15247 then revokes live leases, which the checker reports",
    )
    parser.add_argument(
        "--sharded", action="store_true", help="sharded mode: members share shards (sharded.py)"
    )
    parser.add_argument("--etcd", help="etcd binary (default: the one gee-h's tests use)")
    parser.add_argument("--dir", type=Path, help="run directory (default: a new temporary one)")
    parser.add_argument("--check", type=Path, metavar="DIR", help="only check an earlier run")
    parser.add_argument("--plan", action="store_true", help="only print the schedule of faults")
    args = parser.parse_args(argv)
    if args.ttl < 2:
        parser.error("--ttl must be at least 2 (etcd's minimum lease TTL)")
    if args.workers < 2:
        parser.error("--workers must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.check is not None:
        if not (args.check / "run.json").exists():
            print(f"chaos: {args.check} is not a run directory (no run.json)", file=sys.stderr)
            return 2
        try:
            if sharded.rundir_is_sharded(args.check):
                return shard_checker.report(args.check)
            return checker.report(args.check)
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"chaos: cannot check {args.check}: {type(err).__name__}: {err}", file=sys.stderr)
            return 2
    if args.plan:
        plan = sharded.schedule if args.sharded else schedule
        for f in plan(args.seed, args.seconds, args.ttl):
            print(f"{f.at:8.3f}s  {f.lane:7}  {f.kind:16}  for {f.hold:.3f}s")
        return 0
    rundir = args.dir or Path(tempfile.mkdtemp(prefix=f"geeh-chaos-seed{args.seed}-"))
    opts = Options(
        args.seconds,
        args.seed,
        args.workers,
        args.ttl,
        args.broken,
        args.freeze_raft_leader,
        args.etcd,
        rundir,
        args.runners,
    )
    print(f"chaos: seed {args.seed}, {args.seconds:g}s, run directory {rundir}", flush=True)
    began = time.monotonic()
    try:
        asyncio.run(sharded.execute(opts) if args.sharded else execute(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        print("chaos: interrupted; every process stopped", file=sys.stderr)
        return 130
    except Exception as err:  # one line, not a traceback: error.txt in the run directory has it
        while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:
            err = err.exceptions[0]
        print(f"chaos: the run failed: {type(err).__name__}: {err} (see {rundir}/error.txt)",
              file=sys.stderr)  # fmt: skip
        return 3
    print(f"chaos: run took {time.monotonic() - began:.0f}s; checking", flush=True)
    code = shard_checker.report(rundir) if args.sharded else checker.report(rundir)
    print(
        f"chaos: {'PASS' if code == 0 else 'FAIL'} (replay: --seed {args.seed} "
        f"--seconds {args.seconds:g}{' --broken' if args.broken else ''}"
        f"{' --freeze-raft-leader' if args.freeze_raft_leader else ''}"
        f"{' --sharded' if args.sharded else ''})"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``geeh`` command: leader election from the shell, a local etcd, and a demo.

``main(argv)`` is the console-script entry point; every sub-command lives in a module of
its own (elect.py: elect, observe, leader; run.py; put.py; candidates.py; status.py;
transfer.py; shards.py; etcd.py; demo.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import InvalidArgument
from . import candidates, demo, elect, etcd, put, run, shards, status, transfer
from .common import (
    EXIT_CODES_EPILOG,
    EXIT_USAGE,
    HelpFormatter,
    add_connection_options,
    configure_logging,
    error,
    resolve_connection,
    run_command,
)
from .connection import rewrite_bool_flags

__all__ = ["main"]

DESCRIPTION = """\
Leader election on etcd v3 from the shell: a drop-in for `etcdctl elect`, and more.

  geeh demo                        see it work: a local etcd cluster, candidates, failures
  geeh elect NAME VALUE            campaign; print key and value once elected; hold until ^C
  geeh observe NAME                print each leader (also: geeh elect --listen NAME)
  geeh leader NAME                 print the current leader; exit 1 if there is none
  geeh run NAME -- CMD [ARGS...]   run CMD only while leader
  geeh put [--fenced] KEY VALUE    write a key; fenced: only while the leadership holds
  geeh candidates NAME [--watch]   print every candidate in line, with its lease's TTL
  geeh transfer NAME --to TARGET   hand leadership to a chosen waiting candidate
  geeh shards NAME [--watch]       each shard's owner and token; the balance per member
  geeh status                      the cluster's members, their health, the raft leader
  geeh etcd [--members 3]          run a local etcd for development

Run `geeh COMMAND --help` for the details of each.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geeh",
        description=DESCRIPTION,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geeh {__version__}")
    add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", title="commands")
    demo.add_parsers(commands)
    elect.add_parsers(commands)
    run.add_parsers(commands)
    put.add_parsers(commands)
    candidates.add_parsers(commands)
    status.add_parsers(commands)
    transfer.add_parsers(commands)
    shards.add_parsers(commands)
    etcd.add_parsers(commands)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; for ``run``, everything after the first "--" is CMD, untouched."""
    argv = rewrite_bool_flags(argv)
    if "--" in argv and "run" in argv[: argv.index("--")]:
        cut = argv.index("--")
        args = parser.parse_args(argv[:cut])
        if args.command_name == "run":
            args.command = [*args.command, *argv[cut + 1 :]]
            return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``geeh`` command with ``argv`` (default: sys.argv[1:]); return its exit status."""
    parser = build_parser()
    try:
        args = parse(parser, list(sys.argv[1:] if argv is None else argv))
    except InvalidArgument as err:  # --insecure-transport=maybe
        error("geeh", err)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help, --version, or a usage error
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command_name is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.prog = f"geeh {args.command_name}"
    configure_logging(args.verbose)
    failed = resolve_connection(args)
    if failed is not None:
        return failed
    if args.handler is None:
        status: int = args.sync_handler(args)
        return status
    return run_command(args.prog, args.handler, args)

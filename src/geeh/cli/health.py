"""``--health-addr HOST:PORT``: serve /healthz and /leader while a command runs."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..errors import InvalidArgument

if TYPE_CHECKING:  # gRPC is loaded when a command runs, not for --help
    from ..client import Client


def add_health_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-addr",
        metavar="HOST:PORT",
        type=health_address,
        default=None,
        help="serve http://HOST:PORT/healthz (200 while connected and the session alive) and "
        "/leader (200 while leading); see the Kubernetes probes how-to",
    )


def health_address(text: str) -> tuple[str, int]:
    from ..health import parse_address

    try:
        return parse_address(text)
    except InvalidArgument as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@contextlib.asynccontextmanager
async def serving_health(args: argparse.Namespace, client: Client) -> AsyncIterator[None]:
    """Serve the probes for ``client`` (if --health-addr was given) until the block ends."""
    address: tuple[str, int] | None = getattr(args, "health_addr", None)
    if address is None:
        yield
        return
    from ..health import HealthServer

    name = getattr(args, "name", None)
    election = os.fsencode(name) if name is not None else None  # the bytes the user typed
    async with HealthServer(client, address, election=election):
        yield

"""``--metrics-addr HOST:PORT``: serve gee-h's Prometheus metrics while a command runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..errors import GeehError

if TYPE_CHECKING:
    from ..listeners import Listener

INSTALL_HINT = 'pip install "gee-h[prometheus]"'


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        type=host_port,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs "
        f"{INSTALL_HINT}; see the metrics how-to)",
    )


def host_port(text: str) -> tuple[str, int]:
    """ "HOST:PORT", "[v6]:PORT", or ":PORT" (every interface)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


@contextlib.asynccontextmanager
async def serving_metrics(args: argparse.Namespace) -> AsyncIterator[list[Listener]]:
    """The listeners to give the client: none, or one whose metrics are served over HTTP."""
    address: tuple[str, int] | None = getattr(args, "metrics_addr", None)
    if address is None:
        yield []
        return
    try:
        from prometheus_client import CollectorRegistry, start_http_server

        from ..prometheus import PrometheusListener
    except ImportError:
        raise GeehError(f"--metrics-addr needs prometheus-client: {INSTALL_HINT}") from None
    registry = CollectorRegistry()
    listener = PrometheusListener(registry)
    host, port = address
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as err:
        raise GeehError(f"--metrics-addr {host}:{port}: {err.strerror or err}") from None
    try:
        yield [listener]
    finally:
        await asyncio.to_thread(server.shutdown)  # serve_forever polls: up to 0.5 s
        server.server_close()
        thread.join()

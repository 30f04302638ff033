"""Free ports, and what the cluster asks etcd over HTTP: /health, /metrics and the JSON
gateway (compact, lease revoke). Standard library only, so no gRPC stub is needed."""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

__all__ = ["EtcdRequestError", "free_port", "free_ports"]

LOCALHOST = "127.0.0.1"

# urllib must never route loopback requests through an HTTP proxy that happens to be
# configured in the environment.
_NO_PROXY = urllib.request.ProxyHandler({})


class EtcdRequestError(RuntimeError):
    """etcd's JSON gateway answered a request with an error."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        #: The gRPC status code etcd reported, if any.
        self.code = code


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """Return *count* distinct TCP ports that are currently free on *host*.

    All the probe sockets are held open together until every port has been chosen, so
    the ports are distinct from each other. They are released before returning, so
    another process could still grab one before it is used; LocalEtcdCluster retries
    start-up with new ports if that happens.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOCALHOST) -> int:
    """Return one TCP port that is currently free on *host* (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def _opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    if context is None:
        return urllib.request.build_opener(_NO_PROXY)
    return urllib.request.build_opener(_NO_PROXY, urllib.request.HTTPSHandler(context=context))


def http_get(url: str, timeout: float, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET *url*; return (status, body). HTTP error statuses are returned, not raised."""
    try:
        with _opener(context).open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def gateway(
    url: str, path: str, body: dict[str, Any], timeout: float, context: ssl.SSLContext | None
) -> dict[str, Any]:
    """POST *body* as JSON to etcd's gRPC gateway at *url* + *path*; return the reply.

    Raises:
        EtcdRequestError: etcd answered with an error (its message is kept).
        OSError: the member could not be reached or did not answer in time.
    """
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _opener(context).open(request, timeout=timeout) as response:
            reply: dict[str, Any] = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read().decode("utf-8", "replace")
        try:
            error = json.loads(text)
            raise EtcdRequestError(
                str(error.get("message") or error.get("error") or text), code=error.get("code")
            ) from None
        except (ValueError, AttributeError):
            raise EtcdRequestError(f"HTTP {exc.code}: {text[:200]}") from None
    return reply


def probe_health(url: str, timeout: float) -> tuple[bool, str]:
    """Return (healthy, description) for the member serving /health at *url*."""
    try:
        status, body = http_get(url + "/health", timeout)
    except (OSError, ValueError) as exc:
        return False, f"GET /health failed: {exc}"
    text = body.decode("utf-8", "replace").strip()
    try:
        healthy = json.loads(text).get("health") in ("true", True)
    except (ValueError, AttributeError):
        healthy = False
    return healthy and status == 200, f"GET /health -> {status} {text[:200]}"


def metric(url: str, name: str, timeout: float) -> list[float] | None:
    """The samples of metric *name* (every label set) from /metrics; None if unreadable."""
    try:
        status, body = http_get(url + "/metrics", timeout)
    except (OSError, ValueError):
        return None
    if status != 200:
        return None
    samples: list[float] = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith((name + " ", name + "{")):
            try:
                samples.append(float(line.rsplit(None, 1)[1]))
            except (IndexError, ValueError):
                return None
    return samples


def probe_is_leader(url: str, timeout: float) -> bool | None:
    """Read ``etcd_server_is_leader`` from /metrics; None if it cannot be read."""
    samples = metric(url, "etcd_server_is_leader", timeout)
    return samples[0] == 1.0 if samples else None


def probe_active_peers(url: str, timeout: float) -> int | None:
    """Sum of ``etcd_network_active_peers`` from /metrics; None if it cannot be read."""
    samples = metric(url, "etcd_network_active_peers", timeout)
    return None if samples is None else int(sum(samples))


def tail(path: str, lines: int = 30, max_bytes: int = 16384) -> str:
    """The last *lines* lines of the file at *path* (at most *max_bytes* are read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def process_state(pid: int) -> str | None:
    """Linux process state letter from /proc (``T`` = stopped), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    rest = stat.rsplit(b")", 1)[-1].split()
    return rest[0].decode() if rest else None

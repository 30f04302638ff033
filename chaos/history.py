"""Histories: the JSONL files every process appends to, and etcd's own record of revisions.

Every record carries ``t``, a ``time.monotonic()`` reading: one clock shared by all the
processes on the machine, so records of different processes can be ordered.

etcd's history is read without gee-h (the thing under test): one raw Watch from revision 1
over the whole keyspace, which replays every change in revision order (no compaction happens
during a run).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from geeh._proto import rpc_pb2 as rpc

Record = dict[str, Any]


class Log:
    """Appends one JSON object per line, flushed at once (it survives a SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the process

    def write(self, ev: str, **fields: Any) -> None:
        fields.setdefault("t", time.monotonic())
        self._file.write(json.dumps({"ev": ev, **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read(path: Path) -> list[Record]:
    """The records of a JSONL file; a line cut short by a kill is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _unary(channel: grpc.Channel, path: str, response: Any) -> Any:
    return channel.unary_unary(
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response
    )


def etcd_events(endpoint: str, timeout: float = 60.0) -> Iterator[Record]:
    """Every change etcd made, in revision order: one record per event."""
    with grpc.insecure_channel(endpoint) as channel:
        head = _unary(channel, "/etcdserverpb.KV/Range", rpc.RangeResponse.FromString)(
            rpc.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True), timeout=10
        ).header.revision
        done = threading.Event()

        def requests() -> Iterator[rpc.WatchRequest]:
            yield rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(
                    key=b"\x00", range_end=b"\x00", start_revision=1
                )
            )
            done.wait()

        watch = channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=rpc.WatchResponse.FromString,
        )
        responses = watch(requests(), timeout=timeout)
        seen = 1
        try:
            for response in responses:
                if response.canceled:
                    raise RuntimeError(f"history watch cancelled: {response.cancel_reason}")
                for event in response.events:
                    seen = event.kv.mod_revision
                    yield {
                        "rev": seen,
                        "type": "delete" if event.type == event.DELETE else "put",
                        "key": event.kv.key.decode(errors="replace"),
                        "value": event.kv.value.decode(errors="replace"),
                        "create": event.kv.create_revision,
                        "lease": event.kv.lease,
                    }
                if seen >= head:
                    return
        finally:
            done.set()
            responses.cancel()  # type: ignore[no-untyped-call]


def lease_ttl(endpoint: str, lease: int) -> int:
    """The TTL etcd has left for ``lease`` (-1: gone)."""
    with grpc.insecure_channel(endpoint) as channel:
        method = _unary(
            channel, "/etcdserverpb.Lease/LeaseTimeToLive", rpc.LeaseTimeToLiveResponse.FromString
        )
        return int(method(rpc.LeaseTimeToLiveRequest(ID=lease), timeout=10).TTL)


def keys_under(endpoint: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` now."""
    start = prefix.encode()
    end = start[:-1] + bytes([start[-1] + 1])
    with grpc.insecure_channel(endpoint) as channel:
        method = _unary(channel, "/etcdserverpb.KV/Range", rpc.RangeResponse.FromString)
        response = method(rpc.RangeRequest(key=start, range_end=end, keys_only=True), timeout=10)
        return [kv.key.decode(errors="replace") for kv in response.kvs]


def leases(endpoint: str, etcdctl: str) -> list[int]:
    """Every lease etcd holds now (LeaseLeases, through etcd's own client)."""
    out = subprocess.run(
        [etcdctl, f"--endpoints={endpoint}", "lease", "list", "-w", "json"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return [int(item["id"]) for item in json.loads(out).get("leases") or []]

"""A scripted layer under a client's transport: chosen attempts never get their answer.

Real etcd cannot be made to apply a request late on cue; this can. ``Script(client)`` sits
between the client's transport and its gRPC channels. A rule picks requests by method path
and a predicate, and for each one it picks:

- ``hold``: the request is not sent; the attempt fails as if its answer were lost
  (DEADLINE_EXCEEDED), and the request is kept in ``held`` for the test to have it applied
  later, by another client: a first attempt that etcd applies late;
- ``lose``: the request is sent and applied, and its answer dropped;
- ``drop``: the request is not sent, and the attempt fails as if etcd were unreachable.

Everything else passes through to the real etcd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import grpc.aio

import geeh

Action = Literal["hold", "lose", "drop"]


@dataclass
class Rule:
    path: str
    match: Callable[[Any], bool]
    action: Action
    times: int  # how many more requests it applies to; -1: until removed
    hits: int = 0


class Script:
    def __init__(self, client: geeh.Client) -> None:
        transport = client.core.transport
        self.rules: list[Rule] = []
        self.held: list[Any] = []
        original = transport._callable

        def scripted(endpoint: str, method: Any) -> Any:
            real = original(endpoint, method)

            async def call(request: Any, **kwargs: Any) -> Any:
                rule = self._rule(method.path, request)
                if rule is None:
                    return await real(request, **kwargs)
                if rule.action == "hold":
                    self.held.append(request)
                elif rule.action == "lose":
                    await real(request, **kwargs)
                if rule.action == "drop":
                    raise _error(grpc.StatusCode.UNAVAILABLE, "scripted: failed to connect")
                raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "scripted: answer lost")

            return call

        transport._callable = scripted  # type: ignore[method-assign]

    def add(self, path: str, match: Callable[[Any], bool], action: Action, times: int = 1) -> Rule:
        rule = Rule(path, match, action, times)
        self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        self.rules.remove(rule)

    def _rule(self, path: str, request: Any) -> Rule | None:
        for rule in self.rules:
            if rule.path == path and rule.times != 0 and rule.match(request):
                rule.times -= 1 if rule.times > 0 else 0
                rule.hits += 1
                return rule
        return None


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def puts(value: bytes) -> Callable[[Any], bool]:
    """Matches a Txn whose success branch puts ``value``."""
    return lambda txn: any(
        op.HasField("request_put") and op.request_put.value == value for op in txn.success
    )


def deletes(txn: Any) -> bool:
    """Matches a Txn whose success branch deletes."""
    return any(op.HasField("request_delete_range") for op in txn.success)

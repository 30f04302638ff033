"""Bounded waits for tests: poll or await an event, and fail with a message naming it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        last = result
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def within(aw: Awaitable[Any], timeout: float, what: str) -> Any:
    """Await ``aw``; fail with a clear message if it takes longer than ``timeout``."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")

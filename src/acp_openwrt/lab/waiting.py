"""Waiting in tests and benches for what a real system does in its own time."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(pred: Callable[[], Any], within: float = 10.0, what: str = "",
                step: float = 0.02) -> Any:
    """``pred()``'s first true value, polled every ``step`` s on the running loop;
    AssertionError naming ``what`` if none comes within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(step)
    raise AssertionError(f"timed out waiting for {what or pred}")

"""Ending a child process of acpd: asked first, killed after a grace time, always reaped.

One place for what the parts that run children (the join proxy, the RPL daemon, the registrar
worker) each did: a child that ignores SIGTERM or hangs must not hold acpd's stop, and one that
is never waited for stays a zombie.
"""
from __future__ import annotations

import asyncio
import contextlib


async def end_child(proc: asyncio.subprocess.Process, grace: float,
                    terminate: bool = True) -> int | None:
    """Wait up to ``grace`` s for ``proc`` to exit (after SIGTERM when ``terminate``; without,
    for a child already told to leave), then SIGKILL it; returns its exit status."""
    if proc.returncode is None:
        if terminate:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode

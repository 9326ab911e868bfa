"""child_end.end_child: asked, then killed after the grace time, always reaped."""
from __future__ import annotations

import asyncio
import sys
import time

import pytest

pytestmark = pytest.mark.unit


async def _child(code: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"up\n"  # its signal handling is in place
    return proc


def test_a_child_that_leaves_on_sigterm_gives_its_status() -> None:
    from acp_openwrt.child_end import end_child

    async def run() -> int | None:
        proc = await _child("import time; print('up', flush=True); time.sleep(60)")
        return await end_child(proc, 5.0)

    assert asyncio.run(run()) == -15


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_time() -> None:
    from acp_openwrt.child_end import end_child

    async def run() -> tuple[int | None, float]:
        proc = await _child("import signal, time; signal.signal(signal.SIGTERM, "
                            "signal.SIG_IGN); print('up', flush=True); time.sleep(60)")
        t0 = time.monotonic()
        status = await end_child(proc, 0.5)
        return status, time.monotonic() - t0

    status, took = asyncio.run(run())
    assert status == -9
    assert 0.4 < took < 5


def test_without_terminate_a_child_told_to_leave_is_only_waited_for() -> None:
    from acp_openwrt.child_end import end_child

    async def run() -> int | None:
        proc = await _child("import sys, time; print('up', flush=True); time.sleep(0.2); "
                            "sys.exit(7)")
        return await end_child(proc, 5.0, terminate=False)

    assert asyncio.run(run()) == 7

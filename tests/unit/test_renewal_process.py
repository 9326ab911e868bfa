"""The renewal's short-lived process (brski/pledge/renewal_process.py): its outcome comes back as
RenewalError with the child's one line, a crash with its last line, a timeout or acpd stopping
kills it. (The renewal itself, through a real EST server: tests/netns/test_brski_enrol.py.)"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from acp_openwrt.brski.pledge import renewal_process
from acp_openwrt.brski.pledge.locator import Locator
from acp_openwrt.brski.pledge.plan import RenewalError
from acp_openwrt.brski.store import StoredIdentity

STORED = StoredIdentity(Path("/nonexistent/ldevid.pem"), Path("/nonexistent/ldevid.key"),
                        Path("/nonexistent/anchors.pem"))
WHERE = Locator("fd00::1", 443)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_refusal_comes_back_in_one_line() -> None:
    with pytest.raises(RenewalError, match="^no usable LDevID at /nonexistent/ldevid.pem$"):
        asyncio.run(renewal_process.reenroll(WHERE, STORED))


def test_a_crash_says_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(renewal_process, "CHILD", "raise SystemExit('broken here')")
    with pytest.raises(RenewalError, match=r"renewal process failed \(exit 1\): broken here"):
        asyncio.run(renewal_process.reenroll(WHERE, STORED))


@pytest.mark.parametrize("how", ["timeout", "cancelled"])
def test_the_child_does_not_outlive_the_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             how: str) -> None:
    pid_file = tmp_path / "pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    monkeypatch.setattr(renewal_process, "CHILD", child)

    async def run() -> None:
        task = asyncio.ensure_future(renewal_process.reenroll(WHERE, STORED, within=1.0))
        await asyncio.to_thread(_wait_for, pid_file)
        if how == "cancelled":
            task.cancel()
        with pytest.raises(asyncio.CancelledError if how == "cancelled" else RenewalError):
            await task

    asyncio.run(run())
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)

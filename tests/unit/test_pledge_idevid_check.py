"""The idle pledge's IDevID check in a short-lived process (issue 19): the same verdict, in the
same words, as loading the IDevID in acpd would give."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from acp_openwrt.brski.pledge.client import load_pledge_identity
from acp_openwrt.brski.pledge.idevid_check import idevid_problem
from acp_openwrt.lab.masa import Masa


def test_a_usable_idevid_has_no_problem(tmp_path: Path) -> None:
    masa = Masa.create(tmp_path / "vendor")
    device = masa.issue_idevid("SN-1")
    load_pledge_identity(device.cert_path, device.key_path, masa.anchor_path)  # loads in acpd
    assert asyncio.run(idevid_problem(device.cert_path, device.key_path,
                                      masa.anchor_path)) is None


@pytest.mark.parametrize("which", ["cert", "key"])
def test_an_unusable_idevid_is_refused_as_loading_it_would(tmp_path: Path, which: str) -> None:
    device = Masa.create(tmp_path / "vendor").issue_idevid("SN-1")
    broken = tmp_path / "broken.pem"
    broken.write_text("not PEM\n")
    cert = broken if which == "cert" else device.cert_path
    key = broken if which == "key" else device.key_path
    with pytest.raises(ValueError) as raised:
        load_pledge_identity(cert, key, device.cert_path)
    assert asyncio.run(idevid_problem(cert, key, device.cert_path)) == str(raised.value)


def test_a_missing_file_is_refused_as_loading_it_would(tmp_path: Path) -> None:
    missing = tmp_path / "idevid.pem"
    with pytest.raises((ValueError, OSError)) as raised:
        load_pledge_identity(missing, missing, missing)
    assert asyncio.run(idevid_problem(missing, missing, missing)) == str(raised.value)


def test_the_check_runs_niced_and_is_killed_when_no_longer_needed(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Background work: the child lowers its priority first (a neighbour's BRSKI exchange may
    wait for the same CPU); cancelled (an attempt loaded the IDevID itself), it is killed."""
    import os

    from acp_openwrt.brski.pledge import idevid_check
    fifo = tmp_path / "idevid.pem"
    os.mkfifo(fifo)  # the child blocks reading it: time to look at it
    spawned: list = []
    real_exec = asyncio.create_subprocess_exec

    async def spawn(*args, **kwargs):
        proc = await real_exec(*args, **kwargs)
        spawned.append(proc)
        return proc

    monkeypatch.setattr(idevid_check.asyncio, "create_subprocess_exec", spawn)

    def nice_of(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice

    async def scenario() -> None:
        task = asyncio.create_task(idevid_problem(fifo, fifo, fifo))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if spawned and nice_of(spawned[0].pid) == os.nice(0) + idevid_check.NICE:
                break
        assert spawned and nice_of(spawned[0].pid) == os.nice(0) + idevid_check.NICE
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(spawned[0].wait(), 5) != 0  # killed

    asyncio.run(scenario())


def test_a_crashing_check_is_told_from_a_verdict(tmp_path: Path, monkeypatch) -> None:
    """A child that dies of an uncaught exception (exit 1) is not an IDevID verdict with an
    empty reason: the problem names the check's failure and its last line of stderr."""
    from acp_openwrt.brski.pledge import idevid_check
    monkeypatch.setattr(idevid_check, "CHILD", "raise ImportError('no module named x')")
    problem = asyncio.run(idevid_problem(tmp_path / "a", tmp_path / "b", tmp_path / "c"))
    assert problem is not None and problem.startswith("IDevID check failed (exit 1)")
    assert "ImportError: no module named x" in problem

"""The pledge's enrollstatus report sent off acpd's restart (issue 19): brski.pledge.enroll_report.

BRSKI over a veth as in test_brski_enrol.py: registrar (+ bench MASA) in n1, the pledge in n2
talking to the registrar's link-local address. With `detach_report` (what acpd's pledge uses)
the attempt returns with the report still pending and nothing sent; `send_detached` (what the
coordinator calls just before its exec) reports from a detached copy of the process: the
registrar records the pledge's enrollstatus, and nothing is left behind as our child. When no
copy can be made, the caller reports itself.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.brski.pledge import enroll_report
from acp_openwrt.brski.pledge.client import (
    IdentityPaths,
    Locator,
    PledgeClient,
    load_pledge_identity,
)
from acp_openwrt.brski.pledge.core import Enrolled
from acp_openwrt.brski.store import StoredIdentity
from acp_openwrt.lab.masa import Masa, start_bench_registrar
from acp_openwrt.lab.topology import Topology
from acp_openwrt.lab.waiting import until
from acp_openwrt.netns import listener_in

pytestmark = pytest.mark.netns


def _children() -> list[int]:
    """Our child processes, zombies included (from /proc: the ppid field of each stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry))
    return found


def _enrol(link: Topology, tmp: Path, *, detached: bool) -> dict[str, Any]:
    registrar_node, pledge_node = link["n1"], link["n2"]
    ifname = pledge_node.ifname("n1")
    registrar_ll = registrar_node.link_local(registrar_node.ifname("n2"))
    pledge_node.link_local(ifname)
    out: dict[str, Any] = {}

    async def main() -> None:
        masa = Masa.create(tmp / "vendor")
        await masa.serve(sock=listener_in(registrar_node.netns, "::1"))
        bench = await start_bench_registrar(tmp / "registrar", masa,
                                            sock=listener_in(registrar_node.netns, "::"),
                                            masa_namespace=registrar_node.netns)
        telemetry = bench.registrar.telemetry
        try:
            device = masa.issue_idevid("SN-0001")
            paths = IdentityPaths(device.cert_path, device.key_path, tmp / "node/ldevid.crt",
                                  tmp / "node/ldevid.key", tmp / "node/trust-anchors.pem")
            client = PledgeClient(load_pledge_identity(device.cert_path, device.key_path,
                                                       masa.anchor_path),
                                  paths, namespace=pledge_node.netns, detach_report=True)
            out["result"] = await client.attempt(Locator(registrar_ll, bench.port, ifname))
            await asyncio.sleep(0.5)  # a report sent in line would have arrived by now
            out["at_return"] = [(t["kind"], t["status"]) for t in telemetry]
            report = client.pending_report
            assert report is not None
            if detached:
                out["detached"] = report.send_detached()
                out["children"] = _children()
            else:
                out["sent_here"] = await report.send()
            await until(lambda: any(t["kind"] == "enrollstatus" for t in telemetry), 30.0,
                         "the registrar recording enrollstatus")
            out["telemetry"] = [(t["kind"], t["status"]) for t in telemetry]
        finally:
            await bench.close()
            await masa.close()
    asyncio.run(main())
    return out


def test_detached_report_reaches_the_registrar(link, tmp_path, capfd) -> None:
    logger = logging.getLogger("acpd.brski.pledge")  # to stderr, as acpd logs
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        out = _enrol(link, tmp_path, detached=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert isinstance(out["result"], Enrolled), out["result"]
    assert out["at_return"] == [("voucher_status", True)]  # pending: not sent by the attempt
    assert out["detached"] is True
    # the first copy has been reaped and the reporter is not ours: nothing for acpd to reap
    assert out["children"] == []
    assert out["telemetry"] == [("voucher_status", True), ("enrollstatus", True)]
    deadline = time.monotonic() + 10
    err = ""
    while time.monotonic() < deadline and "enrollstatus delivered" not in err:
        time.sleep(0.1)
        err += capfd.readouterr().err
    delivered = [line for line in err.splitlines() if "enrollstatus delivered" in line]
    assert delivered and f"(pid {os.getpid()})" not in delivered[0]  # by the copy


def test_report_sent_here_when_no_copy_can_be_made(link, tmp_path, monkeypatch) -> None:
    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    registrar_node, pledge_node = link["n1"], link["n2"]
    report = enroll_report.PendingReport(
        Locator(registrar_node.link_local(registrar_node.ifname("n2")), 9,
                pledge_node.ifname("n1")),
        StoredIdentity(tmp_path / "c", tmp_path / "k", tmp_path / "a"), pledge_node.netns)
    assert report.send_detached() is False  # the caller then sends it itself
    out = _enrol(link, tmp_path, detached=False)
    assert out["at_return"] == [("voucher_status", True)]
    assert out["sent_here"] is True
    assert out["telemetry"] == [("voucher_status", True), ("enrollstatus", True)]

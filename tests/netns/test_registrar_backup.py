"""Replacing a registrar from its backup, with real acpd processes (root).

n1 is the registrar and enrols n2; its state is backed up with `acpctl registrar backup`
while it runs; n1 is retired; n3, a fresh node, is restored from the file with
`acpctl registrar restore` and started as the registrar; n4 enrols through it. n4 must get
an address no one else holds, under the same Registrar-ID, and the same domain CA as its
trust anchor: the domain carries on as if nothing had happened.
"""
from __future__ import annotations

import asyncio
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from acp_openwrt.identity.certificate import load_certificate, load_certificates
from acp_openwrt.identity.membership import check_domain_membership
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.topology import line
from acp_openwrt.netns import socket_in


@pytest.fixture
def lab(tmp_path: Path):
    lab = AcpdLab(line(4), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


def acpctl(lab: AcpdLab, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    node = lab.nodes[name]
    return subprocess.run([sys.executable, "-m", "acp_openwrt.acpctl", "--socket",
                           str(node.socket), "registrar", *args, "-c", str(node.write_config())],
                          capture_output=True, text=True, timeout=60)


def serve_masa_in(lab: AcpdLab, name: str) -> asyncio.base_events.Server:
    """The lab's MASA also on [::1]:<its port> of node `name` (the IDevIDs name that URL, and
    a registrar reaches its MASA from its own namespace)."""
    assert lab.masa is not None and lab._masa_loop is not None
    sock = socket_in(lab.nodes[name].host_ns, socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::1", lab.masa.port))
    sock.listen(64)
    first = lab.masa._server  # the lab closes this one; the caller closes the second
    server = asyncio.run_coroutine_threadsafe(lab.masa.serve(sock=sock),
                                              lab._masa_loop).result(10)
    lab.masa._server = first
    return server


def test_a_restored_registrar_carries_on_the_domain(lab: AcpdLab, tmp_path: Path) -> None:
    lab.registrar_and_pledges("n1", "n2")
    backup = tmp_path / "registrar.backup"
    try:
        lab.wait("n2 enrolled", lambda: lab.enrolled("n2"), timeout=30)
        old_registrar = lab.ask("n1", "registrar")
        n2_address = lab.acp_address("n2")
        done = acpctl(lab, "n1", "backup", str(backup))  # while n1's registrar runs
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        again = acpctl(lab, "n1", "backup", str(backup))
        assert again.returncode == 2 and "exists" in again.stderr
        lab.nodes["n1"].stop()  # n1 is retired (failed, stolen, replaced)

        lab.make_registrar("n3")
        lab.make_pledge("n4")
        restored = acpctl(lab, "n3", "restore", str(backup))
        assert restored.returncode == 0, restored.stderr
        second_masa = serve_masa_in(lab, "n3")
        lab.start_all(["n3"])
        lab.wait("n3's registrar running",
                 lambda: lab.ask("n3", "registrar")["running"], timeout=15)
        new_registrar = lab.ask("n3", "registrar")
        assert new_registrar["registrar_id"] == old_registrar["registrar_id"]
        assert new_registrar["domain_ca"] == old_registrar["domain_ca"]
        refused = acpctl(lab, "n3", "restore", str(backup), "--force")
        assert refused.returncode == 2 and "stop it" in refused.stderr  # n3's acpd runs
        lab.start_all(["n4"])
        lab.wait("n4 enrolled through the restored registrar",
                 lambda: lab.enrolled("n4"), timeout=30)
        n4_address = lab.acp_address("n4")
        taken = {n2_address, lab.acp_address("n3")}
        assert n4_address not in taken, (n4_address, taken)
        assert lab.ask("n3", "registrar")["enrolled"] == 2  # n2 from the backup, n4
        ca = load_certificate(lab.nodes["n1"].workdir / "registrar" / "domain-ca.crt")
        for name in ("n2", "n4"):
            anchors = load_certificates(lab.nodes[name].workdir / "domain-ca.pem")
            assert anchors == [ca]
            ldevid = load_certificate(lab.nodes[name].workdir / "ldevid.pem")
            assert check_domain_membership(ldevid, [], anchors, lab.domain).ok
    except BaseException:
        print(lab.logs())
        raise
    finally:
        if "second_masa" in locals():
            lab._masa_loop.call_soon_threadsafe(second_masa.close)

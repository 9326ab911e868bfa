"""The whole ACP from real acpd processes in the guest: three enrolled nodes in a line form
secure channels to their neighbours, RPL builds routes over them, and the ends reach each
other's ACP addresses across two channels (RFC 8994 §6.4-§6.12 end to end)."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.topology import line


@pytest.fixture
def lab(tmp_path: Path):
    if os.environ.get("ACP_LAB_GUEST") != "1":
        pytest.skip("needs the guest kernel: run through pytest's acp-lab plugin or `acp-lab vm`")
    lab = AcpdLab(line(3), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


def test_three_acpd_nodes_form_an_acp(lab: AcpdLab) -> None:
    lab.enrol("n1", "option dodag_root '1'")
    lab.enrol("n2")
    lab.enrol("n3")
    lab.start_all()
    try:
        lab.wait("channels n1-n2 and n2-n3 up",
                 lambda: lab.channels_up("n1") == 1 and lab.channels_up("n2") == 2
                 and lab.channels_up("n3") == 1, timeout=60)
        lab.wait("n3 reaches n1's ACP address across two channels",
                 lambda: lab.ping("n3", "n1") == 1, timeout=30)
        assert lab.ping("n1", "n3", count=3) == 3
        status = lab.ask("n2", "status")
        assert status["failed_parts"] == {}
        # the middle node forwards: its RPL parent is the root, and it has a route to n3
        rpl = status["rpl"]
        assert rpl["rank"] is not None and rpl["parents"]
        n3 = ipaddress.IPv6Address(lab.acp_address("n3"))
        assert any(n3 in ipaddress.IPv6Network(r["prefix"]) and r["ifname"]
                   for r in rpl["installed"]), rpl["installed"]
        # each end runs ACP GRASP on its one channel interface, never on a DULL link
        assert len(lab.ask("n1", "status")["grasp"]["interfaces"]) == 1
    except BaseException:
        print(lab.logs())
        raise


def test_link_cut_heals_over_the_other_channel(tmp_path: Path) -> None:
    """A ring n1 (root) - n2 - n3 - n1: unplug n3's link to n1; acpd releases the DULL twin,
    the channel goes, RPL picks n2 as parent, and n3 reaches n1 again through n2."""
    if os.environ.get("ACP_LAB_GUEST") != "1":
        pytest.skip("needs the guest kernel: run through pytest's acp-lab plugin or `acp-lab vm`")
    from pyroute2 import IPRoute

    from acp_openwrt.lab.topology import ring
    from acp_openwrt.netns import call_in
    lab = AcpdLab(ring(3), tmp_path).up()
    try:
        lab.enrol("n1", "option dodag_root '1'")
        lab.enrol("n2")
        lab.enrol("n3")
        lab.start_all()
        lab.wait("two channels on every node",
                 lambda: all(lab.channels_up(n) == 2 for n in ("n1", "n2", "n3")), timeout=60)
        lab.wait("n3 reaches n1", lambda: lab.ping("n3", "n1") == 1, timeout=30)
        assert lab.topology is not None
        cut = lab.topology["n3"].ifname("n1")

        def unplug() -> None:
            with IPRoute() as ipr:
                ipr.link("del", index=ipr.link_lookup(ifname=cut)[0])
        call_in(lab.topology["n3"].netns, unplug)
        healed = lab.wait("n3 reaches n1 through n2", lambda: lab.ping("n3", "n1") == 1
                          and lab.channels_up("n3") == 1, timeout=30)
        print(f"healed {healed:.1f} s after the cut")
        parents = lab.ask("n3", "rpl")["parents"]
        assert [p["ifname"] for p in parents if p["preferred"]] == \
            [ch["interface"] for ch in lab.ask("n3", "channels") if ch["state"] == "up"]
    except BaseException:
        print(lab.logs())
        raise
    finally:
        lab.close()

"""Zero touch, end to end, in the guest: a registrar node and two nodes that have only an IDevID
enrol through BRSKI (the second through the first one's join proxy, relayed over a secure
channel), then form the ACP: channels, RPL routes, a ping from the far node to the registrar."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from acp_openwrt.identity.membership import check_domain_membership
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


def test_pledges_enrol_and_form_the_acp(lab: AcpdLab) -> None:
    lab.start_masa("n1")
    lab.make_registrar("n1", "option dodag_root '1'")
    lab.make_pledge("n2")
    lab.make_pledge("n3")
    lab.start_all(["n1"])
    lab.trust_registrar("n1")
    lab.start_all(["n2", "n3"])
    try:
        assert not lab.enrolled("n3")
        times = [lab.wait("n2 enrolled", lambda: lab.enrolled("n2"), timeout=60),
                 lab.wait("n3 enrolled", lambda: lab.enrolled("n3"), timeout=90),
                 lab.wait("channels up", lambda: lab.channels_up("n2") == 2, timeout=60),
                 lab.wait("n3 reaches the registrar across two channels",
                          lambda: lab.ping("n3", "n1") == 1, timeout=30)]
        print("enrolment test phases (s):", [round(t, 1) for t in times])
        registrar = lab.ask("n1", "registrar")
        assert registrar["enrolled"] == 2
        # the LDevID BRSKI stored passes the domain-membership check against the domain CA
        work = lab.nodes["n3"].workdir
        from acp_openwrt.identity.certificate import load_certificates
        [cert, *chain] = load_certificates(work / "ldevid.pem")
        anchors = load_certificates(work / "domain-ca.pem")
        result = check_domain_membership(cert, chain, anchors, "acp.example.com")
        assert result.ok, result
        # renewal over EST inside the ACP (the registrar's AN_join_registrar named the EST
        # server): same name and address, no rebuild, charon gets the new certificate
        old = cert.serial_number
        reply = lab.ask("n3", "enroll")
        assert reply["renewed"] is True, reply
        [renewed, *_] = load_certificates(work / "ldevid.pem")
        assert renewed.serial_number != old
        lab.wait("charon has the renewed LDevID",
                 lambda: "renewed LDevID loaded into charon" in lab.nodes["n3"].stderr(), 10)
        status = lab.ask("n3", "status")
        assert status["rebuilds"] == 1
        assert status["identity"]["acp_address"] == lab.acp_address("n3")
        assert lab.ping("n3", "n1") == 1
    except BaseException:
        print(lab.logs())
        raise

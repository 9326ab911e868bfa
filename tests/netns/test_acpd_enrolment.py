"""Zero-touch enrolment between two real acpd processes on this host's kernel: the registrar's
join proxy answers a node that has only an IDevID; once enrolled, the node runs acpd anew (exec,
same pid) with the new identity and floods AN_ACP, so the registrar hears it as a neighbour.
(Channels need kernel IPsec: the vm tier carries on from here.)"""
from __future__ import annotations

import os
from pathlib import Path

from acp_openwrt.lab.acpd_lab import AcpdLab


def _zombie_child(pid: str, parent: int) -> bool:
    """Whether `pid` is a zombie child of `parent`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] == "Z" and int(fields[1]) == parent


def test_pledge_enrols_and_then_floods_an_acp(lab: AcpdLab) -> None:
    lab.registrar_and_pledges("n1", "n2")
    try:
        before = lab.ask("n2", "status")
        assert before["identity"] is None and "rpl" not in before["parts"]
        proc = lab.nodes["n2"].proc
        assert proc is not None
        acp_parts = {"rpl", "grasp", "channels", "discovery"}  # discovery starts after channels
        lab.wait("n2 enrolled and running its ACP parts",
                 lambda: acp_parts <= set(lab.ask("n2", "status")["parts"]), timeout=30)
        after = lab.ask("n2", "status")
        assert after["rebuilds"] == 1 and after["failed_parts"] == {}
        assert after["uptime_s"] >= before["uptime_s"]  # carried over the exec
        # the same process (procd's pid), but a fresh interpreter: the pledge's TLS is gone
        assert proc.poll() is None
        assert "/_ssl." not in Path(f"/proc/{proc.pid}/maps").read_text()
        assert acp_parts <= set(after["parts"])
        assert after["identity"]["acp_domain"] == "acp.example.com"
        # the stored LDevID is where the config said, and a restart would find it
        assert (lab.nodes["n2"].workdir / "ldevid.pem").exists()
        lab.wait("the registrar hears n2's AN_ACP",
                 lambda: any(n["interface"] for n in lab.ask("n1", "neighbors")), timeout=30)
        assert lab.ask("n1", "registrar")["enrolled"] == 1
        # issue 19: n2 reported enrollstatus from a detached copy made just before its exec,
        # not on the way to it; the registrar still records it, the copy is gone
        lab.wait("the registrar records n2's enrollstatus",
                 lambda: lab.ask("n1", "registrar")["counters"].get("enrollstatus 200"),
                 timeout=30)
        log = lab.nodes["n2"].stderr()
        assert "enrollstatus reported by a detached copy of acpd" in log
        assert log.index("acpd starts anew") < log.index("enrollstatus reported by a detached")
        lab.wait("the copy's own log line", lambda: "enrollstatus delivered" in
                 lab.nodes["n2"].stderr(), timeout=10)
        delivered = [line for line in lab.nodes["n2"].stderr().splitlines()
                     if "enrollstatus delivered" in line]
        assert f"(pid {proc.pid})" not in delivered[0]
        zombies = [p for p in os.listdir("/proc") if p.isdigit() and _zombie_child(p, proc.pid)]
        assert zombies == []  # acpd run anew has no child of the old one to reap
    except BaseException:
        print(lab.logs())
        raise


def test_a_pledge_next_to_a_serving_proxy_asks_for_it_and_hears_it_at_once(
        lab: AcpdLab) -> None:
    """Issue 19: a pledge that starts next to a join proxy already serving used to wait for
    the proxy's next periodic AN_Proxy flood (10 s). It now sends a DULL M_DISCOVERY for
    AN_Proxy when its link comes up, and the proxy floods at once."""
    import time
    lab.start_masa("n1")
    lab.make_registrar("n1")
    lab.make_pledge("n2")
    lab.start_all(["n1"])
    lab.trust_registrar("n1")
    try:
        lab.wait("n1's join proxy announces itself",
                 lambda: lab.ask("n1", "status")["discovery"]["announcing_proxy"], timeout=30)
        time.sleep(0.5)  # its first flood (serving began) has gone by: nobody heard it
        lab.start_all(["n2"])
        started = time.monotonic()
        lab.wait("n2 heard n1's join proxy",
                 lambda: lab.enrolled("n2") or lab.ask("n2", "brski")["proxies"], timeout=30)
        assert time.monotonic() - started < 3.0
        answered = lab.ask("n1", "status")["discovery"]["proxy_solicitations"]["answered"]
        assert answered >= 1
    except BaseException:
        print(lab.logs())
        raise

"""More than one registrar in one ACP (RFC 8994 §6.11.7, §9.2), in the guest.

The operator's root and one sub-CA per registrar are made with the openssl commands of
docs/brski.md. Six nodes in a ring with a leaf:

    r1 - p1 - p2 - r2 - m - r1,   m - p3

r1 and r2 are registrars, each a sub-CA of the root (r1's Registrar-ID derived from its
sub-CA's key, r2's set with option registrar_id); m (the DODAG root) is a pledge with a join
proxy; p1, p2, p3 are pledges without one, so p1 can only enrol through r1's proxy (which
relays to its own registrar), p2 only through r2's, and p3 only through m's. Then the
registrar m's proxy relays to is stopped: p3 enrols through m's proxy at the other one, and the
node the stopped registrar had enrolled renews its LDevID at the other one too."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from acp_openwrt.brski.registrar.registrar_id import derived_registrar_id, registrar_id_of
from acp_openwrt.identity.certificate import load_certificate, load_certificates
from acp_openwrt.identity.membership import check_domain_membership
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.operator_pki import operator_pki, serve_masa_in
from acp_openwrt.lab.topology_spec import from_edges

R2_ID = "02aa00000002"
EDGES = [("r1", "p1"), ("p1", "p2"), ("p2", "r2"), ("r2", "m"), ("m", "r1"), ("m", "p3")]


@pytest.fixture
def lab(guest: None, tmp_path: Path):
    lab = AcpdLab(from_edges(EDGES), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


def start(lab: AcpdLab, *names: str) -> None:
    for name in names:
        lab.nodes[name].start(timeout=120)   # the guest's two cores are shared: be patient


def address_id(lab: AcpdLab, name: str) -> int:
    found = registrar_id_of(lab.acp_address(name))
    assert found is not None, name
    return found


def test_two_registrars_enrol_and_take_over(lab: AcpdLab, tmp_path: Path) -> None:
    root_path, subs = operator_pki(tmp_path / "operator", ["r1", "r2"])
    root = load_certificate(root_path)
    sub = {name: load_certificate(s.cert) for name, s in subs.items()}
    masa = lab.start_masa("r1")
    serve_masa_in(lab, "r2")
    masa.trust_registrar(root)     # the MASA pins the operator's root for this domain
    for name in ("r1", "r2"):
        extra = [f"option registrar_ca_cert '{subs[name].chain}'",
                 f"option registrar_ca_key '{subs[name].key}'"]
        if name == "r2":
            extra.append(f"option registrar_id '{R2_ID}'")
        lab.make_registrar(name, *extra)
    lab.make_pledge("m", "option dodag_root '1'")
    for name in ("p1", "p2", "p3"):
        lab.make_pledge(name, "option join_proxy '0'")
    began = time.monotonic()
    start(lab, "r1", "r2", "p1", "p2", "m")
    try:
        for name in ("r1", "r2"):
            lab.wait(f"{name}'s registrar runs",
                     lambda name=name: lab.ask(name, "registrar")["running"], 60)
        ids = {name: int(lab.ask(name, "registrar")["registrar_id"], 16) for name in ("r1", "r2")}
        # r1 derived its Registrar-ID from its sub-CA's key, as the docs' openssl pipeline does
        assert ids["r1"] == derived_registrar_id(sub["r1"]) == subs["r1"].derived_id
        assert ids["r2"] == int(R2_ID, 16) and ids["r1"] != ids["r2"]
        for name in ("p1", "p2", "m"):
            lab.wait(f"{name} enrolled", lambda name=name: lab.enrolled(name), 180)
        enrolled = time.monotonic() - began
        # each pledge's address carries the Registrar-ID of the registrar that enrolled it
        assert address_id(lab, "p1") == ids["r1"]
        assert address_id(lab, "p2") == ids["r2"]
        assert address_id(lab, "m") in ids.values()
        addresses = {lab.acp_address(n) for n in ("r1", "r2", "p1", "p2", "m")}
        assert len(addresses) == 5
        for name, registrar in (("p1", "r1"), ("p2", "r2")):
            work = lab.nodes[name].workdir
            leaf = load_certificate(work / "ldevid.pem")
            leaf.verify_directly_issued_by(sub[registrar])
            anchors = load_certificates(work / "domain-ca.pem")
            assert anchors == [root, sub[registrar]], name
        # the ACP forms across the two sub-CAs: p1 - p2 is a channel between them
        for name in ("p1", "p2", "m", "r1", "r2"):
            lab.wait(f"{name} has both channels", lambda name=name: lab.channels_up(name) == 2,
                     180)
        lab.wait("p1 reaches r2", lambda: lab.ping("p1", "r2") == 1, 60)
        lab.wait("p2 reaches r1", lambda: lab.ping("p2", "r1") == 1, 60)
        formed = time.monotonic() - began
        p2_leaf = load_certificates(lab.nodes["p2"].workdir / "ldevid.pem")[0]
        assert check_domain_membership(
            p2_leaf, [sub["r2"]], load_certificates(lab.nodes["p1"].workdir / "domain-ca.pem"),
            lab.domain).ok
        # p1 and p2 hold both registrars' CRLs: each learnt the other sub-CA from its peer
        for name in ("p1", "p2"):
            lab.wait(f"{name} holds both CRLs", lambda name=name: {
                c["issuer"] for c in lab.ask(name, "status")["revocation"]["crls"]} == {
                sub[r].subject.rfc4514_string() for r in ("r1", "r2")}, 90)
        # every one hears of the other: the registrars, m's proxy, p1's and p2's renewal
        for name, other in (("r1", "r2"), ("r2", "r1")):
            lab.wait(f"{name} heard {other}", lambda name=name, other=other: [
                o for o in lab.ask(name, "registrar")["other_registrars"]
                if o["address"] == lab.acp_address(other)], 150)
            assert lab.ask(name, "registrar")["registrar_id_conflict"] is None
        lab.wait("m's proxy knows both registrars",
                 lambda: len(lab.ask("m", "proxy")["registrars_heard"]) == 2, 150)
        for name in ("p1", "p2"):
            lab.wait(f"{name} knows both EST servers",
                     lambda name=name: len(lab.ask(name, "brski")["est_servers"]) == 2, 150)
        print(f"enrolled after {enrolled:.1f} s, ACP formed after {formed:.1f} s, "
              f"everyone heard both registrars after {time.monotonic() - began:.1f} s")

        # stop the registrar m's join proxy relays to
        current = lab.ask("m", "proxy")["registrar"]["address"]
        gone = next(n for n in ("r1", "r2") if lab.acp_address(n) == current)
        left = "r2" if gone == "r1" else "r1"
        orphan = "p1" if gone == "r1" else "p2"   # enrolled by the registrar that goes
        gone_address = lab.acp_address(gone)
        lab.nodes[gone].stop(signal.SIGTERM, timeout=30)
        stopped = time.monotonic()
        print(f"stopped {gone} ({gone_address}); {left} carries on")

        # a new pledge enrols through m's proxy, at the registrar left
        start(lab, "p3")
        took = lab.wait("p3 enrolled through m at the other registrar",
                        lambda: lab.enrolled("p3"), 240)
        assert address_id(lab, "p3") == ids[left]
        assert lab.acp_address("p3") not in addresses
        leaf = load_certificate(lab.nodes["p3"].workdir / "ldevid.pem")
        leaf.verify_directly_issued_by(sub[left])
        proxy = lab.ask("m", "proxy")
        print("m's proxy:", proxy["registrar"], proxy["registrars_heard"],
              (proxy.get("proxy") or {}).get("registrars"))
        lab.wait(f"m's proxy relays to {left}", lambda: (lab.ask("m", "proxy")["registrar"]
                                                         or {}).get("address")
                 == lab.acp_address(left), 30)
        proxy = lab.ask("m", "proxy")
        print(f"p3 enrolled {took:.1f} s after its start "
              f"({time.monotonic() - stopped:.1f} s after {gone} stopped); m's proxy: "
              f"{proxy['registrars_heard']}")
        lab.wait("p3's channel to m", lambda: lab.channels_up("p3") == 1, 120)
        lab.wait(f"p3 reaches {left}", lambda: lab.ping("p3", left) == 1, 60)

        # the node the stopped registrar enrolled renews at the one left, keeping its name
        work = lab.nodes[orphan].workdir
        old = load_certificate(work / "ldevid.pem")
        old_address = lab.acp_address(orphan)
        renew_began = time.monotonic()
        reply = lab.ask(orphan, "enroll")
        renew_took = time.monotonic() - renew_began
        assert reply["renewed"] is True, (reply, lab.ask(orphan, "brski"))
        new = load_certificate(work / "ldevid.pem")
        assert new.serial_number != old.serial_number
        new.verify_directly_issued_by(sub[left])   # the other registrar's sub-CA issued it
        assert lab.ask(orphan, "status")["identity"]["acp_address"] == old_address
        assert address_id(lab, orphan) == ids[gone]   # its address keeps its Registrar-ID
        anchors = load_certificates(work / "domain-ca.pem")
        assert anchors[0] == root and sub[left] in anchors
        servers = lab.ask(orphan, "brski")["est_servers"]
        assert servers[0]["address"] == lab.acp_address(left), servers
        # it tried the registrar that had issued its certificate first, and went on
        [dead] = [s for s in servers if s["address"] == gone_address]
        assert dead["failed_ago"] is not None and dead["last_error"], servers
        print(f"{orphan} renewed at {left} in {renew_took:.1f} s; EST servers: {servers}")
        lab.wait(f"{orphan} reaches {left} after renewal",
                 lambda: lab.ping(orphan, left) == 1, 60)
    except BaseException:
        print(lab.logs())
        raise

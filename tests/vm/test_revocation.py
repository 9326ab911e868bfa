"""Revocation in the guest (RFC 8994 §6.2.3 rule 3, §6.2.5.3): a 4-node ring, n1 the registrar
(its CRL served on its ACP address, named in every certificate), n2..n4 with LDevIDs from its
CA; the operator revokes n3; n3's renewal is refused at once, and both of its neighbours (n2,
n4) close their channels to it within one CRL refresh interval and refuse its new attempts,
while the rest of the ACP stays up. Then the registrar stops: n2, restarted, still refuses n3
with the CRL it kept; n4, restarted without one, forms its channel to n3 (an unreachable CRL
distribution point refuses nobody). Timings printed."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.revocation import enrol_from_registrar
from acp_openwrt.lab.topology import ring

REFRESH = 20  # crl_refresh of every node, seconds


@pytest.fixture
def lab(guest: None, tmp_path: Path):
    lab = AcpdLab(ring(4), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


def start(lab: AcpdLab, node: str) -> None:
    lab.nodes[node].start(timeout=120)   # the guest's two cores are shared: be patient


def up_to(lab: AcpdLab, node: str, peer_name: str) -> int:
    return sum(1 for ch in lab.ask(node, "channels")
               if ch["state"] == "up" and ch["peer_node_name"] == peer_name)


def test_revoked_node_is_cut_off_by_every_neighbour(lab: AcpdLab) -> None:
    refresh = f"option crl_refresh '{REFRESH}'"
    lab.start_masa("n1")
    lab.make_registrar("n1", "option dodag_root '1'", refresh)
    start(lab, "n1")
    names = {n: enrol_from_registrar(lab, "n1", n, refresh) for n in ("n2", "n3", "n4")}
    for node in ("n2", "n3", "n4"):
        start(lab, node)
    try:
        formed = [lab.wait(f"{n} has both channels", lambda n=n: lab.channels_up(n) == 2, 120)
                  for n in ("n1", "n2", "n3", "n4")]
        lab.wait("n3 reaches the registrar", lambda: lab.ping("n3", "n1") == 1, 30)
        for node in ("n2", "n4"):   # every node fetched the (empty) CRL
            lab.wait(f"{node} holds the CRL",
                     lambda node=node: lab.ask(node, "status")["revocation"]["crls"], 30)
        print("ACP formed (s, per node):", [round(t, 1) for t in formed])

        began = time.monotonic()
        answer = lab.ask("n1", "revoke", target=names["n3"], reason="vm test")
        assert len(answer["revoked"]) == 1, answer
        renewal = lab.ask("n3", "enroll")
        assert renewal["renewed"] is False and "revoked" in str(renewal["error"]), renewal
        cut: dict[str, float] = {}
        while len(cut) < 2 and time.monotonic() - began < REFRESH + 40:
            for node in ("n2", "n4"):
                if node not in cut and up_to(lab, node, names["n3"]) == 0:
                    cut[node] = time.monotonic() - began
            time.sleep(0.2)
        print(f"revoked {names['n3']}: neighbours cut it off after (s):",
              {k: round(v, 1) for k, v in sorted(cut.items())}, f"crl_refresh {REFRESH} s")
        assert set(cut) == {"n2", "n4"}, lab.logs()
        assert max(cut.values()) <= REFRESH + 5   # one refresh interval (+ fetch, teardown)
        lab.wait("n3 has no channel", lambda: lab.channels_up("n3") == 0, 30)

        # it stays cut off: its new attempts are refused by both neighbours
        time.sleep(15)
        for node in ("n2", "n4"):
            assert up_to(lab, node, names["n3"]) == 0
            status = lab.ask(node, "status")["revocation"]
            assert status["revoked"] == 1, status
        # the rest of the ACP is up: n2 and n4 still reach the registrar, n2 - n1 - n4
        assert lab.channels_up("n1") == 2
        assert lab.ping("n2", "n1") == 1 and lab.ping("n4", "n1") == 1
        listing = lab.ask("n1", "revoked")
        assert listing["revoked_names"] == [names["n3"]]
        print("n2's channels after:", [(c["peer_node_name"], c["state"], c["last_error"])
                                       for c in lab.ask("n2", "channels")])

        # the registrar goes away: the CRL cannot be fetched any more
        lab.nodes["n1"].stop(signal.SIGTERM, timeout=30)
        # n2 restarts: the CRL it kept (crl_file) still refuses n3
        lab.nodes["n2"].stop(signal.SIGTERM, timeout=30)
        start(lab, "n2")
        # n4 restarts without its kept CRL: with no CRL and the distribution point unreachable,
        # nothing is refused for that (RFC 8994 §6.2.3 rule 3): its channel to n3 comes up
        lab.nodes["n4"].stop(signal.SIGTERM, timeout=30)
        (lab.nodes["n4"].workdir / "acp-crl.pem").unlink()
        start(lab, "n4")
        took = lab.wait("n4's channel to n3 without a CRL",
                        lambda: up_to(lab, "n4", names["n3"]) == 1, 90)
        print(f"registrar down: n4 without a CRL has its channel to n3 after {took:.1f} s")
        lab.wait("n2 fails to fetch the CRL",
                 lambda: lab.ask("n2", "status")["revocation"]["sources"][0]["last_error"], 60)
        time.sleep(10)
        kept = lab.ask("n2", "status")["revocation"]
        assert kept["revoked"] == 1 and up_to(lab, "n2", names["n3"]) == 0, kept
        print("n2 after its restart, registrar down:", kept["sources"][0]["last_error"],
              "; channels:", [(c["peer_node_name"], c["state"], c["last_error"])
                              for c in lab.ask("n2", "channels")])
    except BaseException:
        print(lab.logs())
        raise

"""Two acpd nodes on one link hear each other's AN_ACP floods; a node without LDevID floods
nothing. Real acpd processes, real DULL GRASP on real links."""
from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from acp_openwrt.lab.acpd_runner import AcpdNode, wait_for
from acp_openwrt.lab.pki import TestCA
from acp_openwrt.netns import call_in, create_namespace, list_namespaces, remove_namespace

ADDRESSES = {"a": "fd89b714f3db00000200000064000001", "b": "fd89b714f3db00000200000064000002"}


def _link(ns_a: str, ns_b: str) -> None:
    def make() -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer"})
            ipr.link("set", index=ipr.link_lookup(ifname="peer")[0], net_ns_fd=f"/run/netns/{ns_b}")
            ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], state="up")
    call_in(ns_a, make)

    def rename() -> None:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="peer")[0]
            ipr.link("set", index=idx, ifname="eth0")
            ipr.link("set", index=idx, state="up")
    call_in(ns_b, rename)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[AcpdNode, AcpdNode]]:
    tag = "d" + secrets.token_hex(3)
    ca = TestCA.create(tmp_path / "ca", domain="acp.example.com")
    nodes = []
    for name in ("a", "b"):
        creds = ca.issue_node(name, acp_node_name=f"{ADDRESSES[name]}+@acp.example.com")
        work = tmp_path / name
        work.mkdir()
        node = AcpdNode(f"{tag}{name}", f"{tag}{name}-host", work, extra=(
            f"\toption ldevid_cert '{creds.cert_path}'\n\toption ldevid_key '{creds.key_path}'\n"
            f"\toption trust_anchors '{creds.anchor_path}'\n"))
        create_namespace(node.host_ns)
        nodes.append(node)
    try:
        _link(nodes[0].host_ns, nodes[1].host_ns)
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL)
        for node in nodes:
            for ns in (node.host_ns, node.dull_ns, node.acp_ns):
                if ns in list_namespaces():
                    remove_namespace(ns)


def _peers(node: AcpdNode) -> list[dict]:
    return node.ask("neighbors")


def test_two_nodes_discover_each_other_within_2s(pair) -> None:
    a, b = pair
    a.start()
    b.start()
    t0 = time.monotonic()
    wait_for(lambda: _peers(a) and _peers(b), timeout=5, what="adjacencies both ways")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"discovery took {elapsed:.2f} s"
    [seen_by_a] = _peers(a)
    [seen_by_b] = _peers(b)
    a_ll = [e["link_local"] for e in a.ask("interfaces")]
    b_ll = [e["link_local"] for e in b.ask("interfaces")]
    assert seen_by_a["peer"] in b_ll and seen_by_b["peer"] in a_ll
    assert seen_by_a["interface"] == "eth0" and seen_by_a["methods"] == ["IKEv2"]
    # an enrolled node runs every part, and none failed to start
    status = a.ask("status")
    assert status["failed_parts"] == {}
    assert {"links", "rpl", "grasp", "channels", "discovery", "brski"} <= set(status["parts"])
    assert seen_by_a["port"] == 500 and 200 < seen_by_a["ttl_s"] <= 210
    status = a.ask("status")
    assert status["discovery"]["flooding"] and status["discovery"]["floods_sent"] >= 1
    assert a.stop() == 0 and b.stop() == 0


def test_no_ldevid_no_flood(pair) -> None:
    a, b = pair
    b.extra = ""  # b has no LDevID: it listens (it would pledge) but floods nothing
    b.start()
    a.start()  # a floods as its link comes up, while b already listens
    wait_for(lambda: _peers(b), timeout=5, what="b hears a")
    time.sleep(1.5)
    assert _peers(a) == []
    assert b.ask("status")["discovery"]["floods_sent"] == 0
    assert a.stop() == 0 and b.stop() == 0

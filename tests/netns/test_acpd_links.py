"""acpd adopts host links into DULL (veth into bridges, macvlan otherwise), live, and leaves
nothing behind. Real acpd processes in namespaces; checks read netlink, not acpd's word."""
from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from acp_openwrt.lab.acpd_runner import AcpdNode, wait_for
from acp_openwrt.netns import call_in, create_namespace, list_namespaces, remove_namespace


def _links(ns: str) -> dict[str, dict]:
    def dump() -> dict[str, dict]:
        with IPRoute() as ipr:
            out = {}
            for msg in ipr.get_links():
                info = msg.get_attr("IFLA_LINKINFO")
                out[msg.get_attr("IFLA_IFNAME")] = {
                    "index": msg["index"], "master": msg.get_attr("IFLA_MASTER"),
                    "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
                    "alias": msg.get_attr("IFLA_IFALIAS")}
            return out
    return call_in(ns, dump)


def _ipr(ns: str, fn) -> None:
    def run() -> None:
        with IPRoute() as ipr:
            fn(ipr)
    call_in(ns, run)


def _veth(host: str, name: str, wire: str, bridge: str | None = None) -> None:
    def make(ipr: IPRoute) -> None:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": "w-" + name})
        peer = ipr.link_lookup(ifname="w-" + name)[0]
        ipr.link("set", index=peer, net_ns_fd=f"/run/netns/{wire}")
        idx = ipr.link_lookup(ifname=name)[0]
        if bridge:
            ipr.link("set", index=idx, master=ipr.link_lookup(ifname=bridge)[0])
        ipr.link("set", index=idx, state="up")
    _ipr(host, make)
    _ipr(wire, lambda ipr: ipr.link("set", index=ipr.link_lookup(ifname="w-" + name)[0],
                                    state="up"))


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[tuple[str, str, AcpdNode]]:
    """A host namespace with br-lan (ports sw1, sw2) and a plain eth0; peers in a wire ns."""
    tag = "t" + secrets.token_hex(3)
    host, wire = f"{tag}-host", f"{tag}-wire"
    create_namespace(host)
    create_namespace(wire)
    node = AcpdNode(tag, host, tmp_path)
    try:
        _ipr(host, lambda ipr: ipr.link("add", ifname="br-lan", kind="bridge"))
        _ipr(host, lambda ipr: ipr.link("set", index=ipr.link_lookup(ifname="br-lan")[0],
                                        state="up"))
        _veth(host, "sw1", wire, "br-lan")
        _veth(host, "sw2", wire, "br-lan")
        _veth(host, "eth0", wire)
        yield host, wire, node
    finally:
        node.stop(signal.SIGKILL)
        for ns in (host, wire, node.dull_ns, node.acp_ns):
            if ns in list_namespaces():
                remove_namespace(ns)


def _twins(node: AcpdNode) -> dict[str, dict]:
    return {name: link for name, link in _links(node.dull_ns).items()
            if (link["alias"] or "").startswith("acp-twin")}


def test_adopts_bridge_and_plain_then_cleans_up(bench) -> None:
    host, _wire, node = bench
    before = set(_links(host))
    node.start()
    twins = wait_for(lambda: len(_twins(node)) == 2 and _twins(node), what="two twins")
    assert twins["br-lan"]["kind"] == "veth"
    assert twins["eth0"]["kind"] == "macvlan"
    host_links = _links(host)
    ports = [n for n, link in host_links.items()
             if (link["alias"] or "").startswith("acp-port")]
    assert len(ports) == 1  # one veth end for the whole bridge, not one per switch port
    assert host_links[ports[0]]["master"] == host_links["br-lan"]["index"]
    def ready() -> list[dict] | None:
        found = [e for e in node.ask("interfaces") if e["link_local"]]
        return found if len(found) == 2 else None
    shown = wait_for(ready, what="link-locals")
    assert {(e["host_interface"], e["method"]) for e in shown} == {("br-lan", "veth"),
                                                                    ("eth0", "macvlan")}
    assert all(e["link_local"].startswith("fe80:") for e in shown)
    for ns in (node.dull_ns, node.acp_ns):
        assert ns in list_namespaces()
        assert _links(ns)["lo"]  # lo exists; acpd brought it up (checked by ping elsewhere)
    assert node.stop() == 0
    assert set(_links(host)) == before
    assert node.dull_ns not in list_namespaces() and node.acp_ns not in list_namespaces()
    assert not node.socket.exists()


def test_hot_add_remove_and_bridge_leave(bench) -> None:
    host, wire, node = bench
    node.start()
    wait_for(lambda: len(_twins(node)) == 2, what="initial twins")
    _veth(host, "eth1", wire)
    wait_for(lambda: "eth1" in _twins(node), what="eth1 adopted")
    _ipr(host, lambda ipr: ipr.link("del", index=ipr.link_lookup(ifname="eth0")[0]))
    wait_for(lambda: "eth0" not in _twins(node), what="eth0 twin removed")
    for port in ("sw1", "sw2"):  # the bridge loses its last member: its twin goes
        _ipr(host, lambda ipr, p=port: ipr.link("set", index=ipr.link_lookup(ifname=p)[0],
                                                master=0))
    wait_for(lambda: "br-lan" not in _twins(node), what="bridge twin removed")
    # sw1/sw2 are plain interfaces now: each gets its macvlan
    wait_for(lambda: {"sw1", "sw2", "eth1"} == set(_twins(node)), what="former ports adopted")
    assert not [n for n, link in _links(host).items()
                if (link["alias"] or "").startswith("acp-port")]
    assert node.stop() == 0


def test_ignore_patterns(bench) -> None:
    _host, _wire, node = bench
    node.extra = "\tlist ignore_interfaces 'eth*'\n"
    node.start()
    wait_for(lambda: "br-lan" in _twins(node), what="bridge twin")
    assert "eth0" not in _twins(node)
    assert node.stop() == 0


def test_restart_adopts_without_duplicates(bench) -> None:
    host, _wire, node = bench
    before = set(_links(host))
    node.start("--keep")
    first = wait_for(lambda: len(_twins(node)) == 2 and _twins(node), what="twins")
    assert node.stop() == 0
    assert _twins(node) == first  # --keep: left in place
    node.start()
    wait_for(lambda: len(node.ask("interfaces")) == 2, what="re-adopted")
    assert _twins(node) == first  # same links, same indexes: adopted, not rebuilt
    assert len([n for n, link in _links(host).items()
                if (link["alias"] or "").startswith("acp-port")]) == 1
    assert node.stop() == 0
    assert set(_links(host)) == before
    assert node.dull_ns not in list_namespaces()  # created by the first run: still ours


def test_crash_leaves_nothing_the_next_start_cannot_clean(bench) -> None:
    host, _wire, node = bench
    before = set(_links(host))
    node.start()
    wait_for(lambda: len(_twins(node)) == 2, what="twins")
    node.stop(signal.SIGKILL)
    # a half-made adoption: a stray port end of ours, its DULL end never moved
    _ipr(host, lambda ipr: ipr.link("add", ifname="acpb999", kind="veth",
                                    peer={"ifname": "acpt999"}))
    _ipr(host, lambda ipr: ipr.link("set", index=ipr.link_lookup(ifname="acpb999")[0],
                                    ifalias="acp-port 999"))
    node.start()
    wait_for(lambda: "acpb999" not in _links(host), what="stray port removed")
    assert len(_twins(node)) == 2
    assert node.stop() == 0
    leftover = set(_links(host)) - before
    assert leftover <= {"acpt999"}  # the peer of a stray end goes with it
    assert not leftover

"""The pure half of the lab topologies: builders, interface names, validation errors."""
from __future__ import annotations

import pytest

from acp_openwrt import netns as netns_exec
from acp_openwrt.lab.topology import (
    End,
    Link,
    NodeSpec,
    SpecBuilder,
    Topology,
    TopologyError,
    TopologySpec,
    check_ifname,
    from_edges,
    line,
    mesh,
    named,
    random_prefix,
    ring,
    segment,
    star,
)


def ends(spec: TopologySpec, node: str) -> list[str]:
    return [lk.end_at(node).ifname for lk in spec.links_of(node)]


def test_line_names_interfaces_per_node_in_link_order() -> None:
    spec = line(3)
    assert [n.name for n in spec.nodes] == ["n1", "n2", "n3"]
    assert spec.links == (Link(End("n1", "eth0"), End("n2", "eth0")),
                          Link(End("n2", "eth1"), End("n3", "eth0")))
    assert spec.ifname("n2", "n1") == "eth0"
    assert spec.ifname("n2", "n3") == "eth1"
    with pytest.raises(TopologyError, match="no link between 'n1' and 'n3'"):
        spec.ifname("n1", "n3")


def test_builders_have_the_expected_shape() -> None:
    assert len(ring(4).links) == 4 and all(len(ends(ring(4), f"n{i}")) == 2 for i in range(1, 5))
    assert ends(star(4), "n1") == ["eth0", "eth1", "eth2"]
    assert ends(star(4), "n4") == ["eth0"]
    big = mesh(5)
    assert len(big.links) == 10
    assert all(len(ends(big, f"n{i}")) == 4 for i in range(1, 6))
    assert line(1).links == ()
    assert named("ring", 5) == ring(5) and named("segment", 2, dad=True) == segment(2, dad=True)


def test_segment_puts_every_node_on_one_bridge_in_a_switch_node() -> None:
    spec = segment(3)
    sw = spec.node("sw")
    assert sw.switch and sw.bridges == ("br0",)
    for i in (1, 2, 3):
        link = spec.links_of(f"n{i}")[0]
        assert link.end_at(f"n{i}") == End(f"n{i}", "eth0")
        assert link.end_at("sw") == End("sw", f"p{i}", "br0")


def test_names_are_deterministic_and_fit_ifnamsiz_even_when_large() -> None:
    assert mesh(6) == mesh(6)
    names = [lk.a.ifname for lk in mesh(40).links] + [lk.b.ifname for lk in mesh(40).links]
    assert max(len(n) for n in names) <= 15
    assert Topology(line(2), prefix="t1").nodes["n2"].netns == "t1-n2"


def test_from_edges_keeps_isolated_nodes_and_order() -> None:
    spec = from_edges([("b", "a")], nodes=["z"])
    assert [n.name for n in spec.nodes] == ["z", "b", "a"]
    assert spec.links_of("z") == []


def test_builder_bridge_ports() -> None:
    spec = (SpecBuilder().node("r", bridges=["br_lan"]).node("x").node("y")
            .link("r", "x", ifname_a="lan1", bridge_a="br_lan")
            .link("r", "y", ifname_a="wan").build(dad=True, addrgenmode="none"))
    assert spec.links[0].a == End("r", "lan1", "br_lan")
    assert spec.ifname("r", "y") == "wan"
    assert spec.dad and spec.addrgenmode == "none"


@pytest.mark.parametrize("make, message", [
    (lambda: TopologySpec((NodeSpec("a"), NodeSpec("a"))), "duplicate node name 'a'"),
    (lambda: SpecBuilder().node("a").node("a"), "duplicate node name 'a'"),
    (lambda: TopologySpec((NodeSpec("averyverylongname"),)),
     "node name 'averyverylongname' is invalid"),
    (lambda: TopologySpec((NodeSpec("A-1"),)), "node name 'A-1' is invalid"),
    (lambda: TopologySpec((NodeSpec("a"),), (Link(End("a", "eth0"), End("ghost", "eth0")),)),
     "unknown node 'ghost'"),
    (lambda: SpecBuilder().node("a").node("b").link("a", "b", ifname_a="sixteen_chars_xx").build(),
     "interface name 'sixteen_chars_xx' is invalid"),
    (lambda: SpecBuilder().node("a").node("b").link("a", "b", ifname_a="e/1").build(),
     "'e/1' is invalid"),
    (lambda: SpecBuilder().node("a").node("b").link("a", "b", ifname_a="x")
     .link("a", "b", ifname_a="x").build(),
     "duplicate interface 'x' in node 'a'"),
    (lambda: SpecBuilder().node("a").node("b").link("a", "b", bridge_a="br0").build(),
     "node has no bridge 'br0'"),
    (lambda: SpecBuilder().node("a").link("a", "a").build(), "loops back to node 'a'"),
    (lambda: line(2, addrgenmode="eui48"), "addrgenmode 'eui48'"),
    (lambda: ring(2), "need at least 3 nodes"),
    (lambda: named("torus", 4),
     "unknown topology 'torus' (one of line, ring, star, mesh, segment)"),
    (lambda: Topology(line(2), prefix="has-dash"), "prefix 'has-dash' is invalid"),
    (lambda: Topology(line(2), prefix="toolongprefix"), "prefix 'toolongprefix' is invalid"),
    (lambda: Topology(line(2), prefix="t1")["n9"], "no node 'n9'"),
])
def test_bad_specs_give_one_line_errors(make, message: str) -> None:
    with pytest.raises(TopologyError) as info:
        make()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_check_ifname_accepts_the_kernel_limit() -> None:
    assert check_ifname("a" * 15) == "a" * 15
    with pytest.raises(TopologyError):
        check_ifname("a" * 16)


def test_random_prefixes_are_valid_and_distinct() -> None:
    prefixes = {random_prefix() for _ in range(50)}
    assert len(prefixes) == 50
    for p in prefixes:
        Topology(line(1), prefix=p)  # passes check_prefix


def test_namespace_paths_and_stale_prefixes_are_checked() -> None:
    assert netns_exec.netns_path("x1-n1") == "/run/netns/x1-n1"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            netns_exec.netns_path(bad)
    for bad in ("", "a-b", "a/b"):
        with pytest.raises(ValueError):
            netns_exec.cleanup_stale(bad)
    assert netns_exec.netns_argv("t-n1", ["true"]) == ["ip", "netns", "exec", "t-n1", "true"]


SPEC_NAMES = ("ADDRGENMODES", "BUILDERS", "IFNAME_MAX", "End", "Link", "NodeSpec", "SpecBuilder",
              "TopologyError", "TopologySpec", "check_ifname", "check_prefix", "from_edges",
              "ifname_towards", "line", "mesh", "named", "random_prefix", "ring", "segment", "star")


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_names_live_in_topology_spec_and_stay_importable_from_topology(name: str) -> None:
    import importlib

    spec_module = importlib.import_module("acp_openwrt.lab.topology_spec")
    topology_module = importlib.import_module("acp_openwrt.lab.topology")
    assert getattr(topology_module, name) is getattr(spec_module, name)
    assert name in topology_module.__all__


def test_spec_module_needs_no_netlink() -> None:
    import subprocess
    import sys

    code = ("import sys, acp_openwrt.lab.topology_spec as s; s.line(3);"
            "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

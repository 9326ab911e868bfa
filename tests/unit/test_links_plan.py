"""links.plan: which host links get which twin, and what a reconcile does."""
from __future__ import annotations

from acp_openwrt.links.plan import (
    Adopt,
    HostLink,
    Release,
    RemoveStrayPort,
    Twin,
    parse_twin_alias,
    plan,
    port_alias,
    twin_alias,
    wanted,
)

LO = HostLink(1, "lo", loopback=True, link_type=772)
BR = HostLink(2, "br-lan", kind="bridge")
SW1 = HostLink(3, "lan1", kind="dsa", master=2)
SW2 = HostLink(4, "lan2", kind="dsa", master=2)
WAN = HostLink(5, "wan")
TUN = HostLink(6, "tun0", kind="tun", link_type=65534)
BOND = HostLink(7, "bond0", kind="bond")
SLAVE = HostLink(8, "eth3", master=7)
DUMMY = HostLink(9, "dummy0", kind="dummy")


def test_wanted_one_veth_per_bridge_and_macvlan_otherwise() -> None:
    want = wanted([LO, BR, SW1, SW2, WAN, TUN, BOND, SLAVE, DUMMY], ())
    assert want == {2: Adopt("veth", 2, "br-lan"), 5: Adopt("macvlan", 5, "wan"),
                    7: Adopt("macvlan", 7, "bond0")}


def test_bridge_without_members_and_our_port_are_not_adopted() -> None:
    port = HostLink(10, "acpb2", kind="veth", master=2, alias=port_alias(2))
    assert wanted([BR, port], ()) == {}
    assert wanted([BR, port, SW1], ()) == {2: Adopt("veth", 2, "br-lan")}


def test_ignore_patterns_and_temporary_names() -> None:
    want = wanted([BR, SW1, WAN, HostLink(11, "acpm5"), HostLink(12, "eth9")], ("w*", "lan1"))
    assert want == {12: Adopt("macvlan", 12, "eth9")}  # lan1 ignored: the bridge has no member


def test_plan_keeps_releases_and_adopts() -> None:
    twins = [Twin(20, "br-lan", "veth", 2, "br-lan"), Twin(21, "old", "macvlan", 99, "old"),
             Twin(22, "wan", "macvlan", 5, "wan")]
    actions = plan([BR, SW1, WAN, HostLink(13, "eth1")], twins, ())
    assert actions == [Release(twins[1]), Adopt("macvlan", 13, "eth1")]


def test_duplicate_twin_released_and_method_change() -> None:
    twins = [Twin(20, "wan", "macvlan", 5, "wan"), Twin(21, "wan2", "macvlan", 5, "wan"),
             Twin(22, "lan1", "macvlan", 3, "lan1")]
    actions = plan([BR, SW1, WAN], twins, ())
    assert Release(twins[1]) in actions and Release(twins[2]) in actions
    assert Release(twins[0]) not in actions
    assert Adopt("veth", 2, "br-lan") in actions  # lan1 joined br-lan: the bridge gets the twin


def test_stray_port_removed_unless_its_twin_is_kept() -> None:
    port = HostLink(10, "acpb2", kind="veth", master=2, alias=port_alias(2))
    stray = HostLink(11, "acpb77", kind="veth", alias=port_alias(77))
    kept = [Twin(20, "br-lan", "veth", 2, "br-lan")]
    assert plan([BR, SW1, port, stray], kept, ()) == [RemoveStrayPort(11, "acpb77")]
    assert RemoveStrayPort(10, "acpb2") in plan([BR, SW1, port], [], ())


def test_aliases_round_trip_and_refuse_garbage() -> None:
    assert parse_twin_alias(twin_alias("veth", 2, "br-lan")) == ("veth", 2, "br-lan")
    for bad in (None, "", "acp-twin", "acp-twin gre 2 x", "acp-twin veth x y", "acp-twin veth 2 "):
        assert parse_twin_alias(bad) is None

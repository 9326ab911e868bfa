"""Connect subnets: configured, Manual from a Subnet-ID, carved from Vlong; RPL extra targets."""
from __future__ import annotations

import ipaddress
import random

import pytest

from acp_openwrt.connect.addressing import (
    carved_subnet,
    connect_subnet,
    manual_prefix,
    manual_warning,
    plan_subnets,
)
from acp_openwrt.connect.config import ConnectConfig
from acp_openwrt.identity.address import (
    AcpAddress,
    AddressError,
    Scheme,
    manual_address,
    vlong_address,
    zone_address,
)
from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl.dodag import RplNode
from acp_openwrt.rpl.messages import Dao
from acp_openwrt.rpl.profile import RplConfig

RSUB = "acp.example.com"
ZONE = zone_address(RSUB, 0x020000006400, 1).address          # fd73:9fc2:3c34:0:200:0:6400:2
V16 = vlong_address(RSUB, 0x1122334455, 3, v_bits=16).address
V8 = vlong_address(RSUB, 0x1122334455, 3, v_bits=8).address


def test_manual_prefix_matches_the_rfc_example() -> None:
    # digest A.14: Manual Subnet-ID 1 in acp.example.com -> fd73:9fc2:3c34:2001::/64
    assert manual_prefix(ZONE, 1) == ipaddress.IPv6Network("fd73:9fc2:3c34:2001::/64")
    assert manual_prefix(V16, 8191) == ipaddress.IPv6Network("fd73:9fc2:3c34:3fff::/64")
    decoded = AcpAddress.decode(manual_prefix(ZONE, 5).network_address)
    assert decoded.scheme is Scheme.MANUAL and decoded.subnet_id == 5
    assert manual_prefix(ZONE, 1).network_address == manual_address(RSUB, 1).address
    with pytest.raises(AddressError):
        manual_prefix(ZONE, 8192)


def test_carved_from_vlong() -> None:
    assert str(V16) == "fd73:9fc2:3c34:4011:2233:4455:8003:0"
    assert carved_subnet(V16, 0) == ipaddress.IPv6Network(
        "fd73:9fc2:3c34:4011:2233:4455:8003:ff00/120")
    assert carved_subnet(V16, 1) == ipaddress.IPv6Network(
        "fd73:9fc2:3c34:4011:2233:4455:8003:fe00/120")
    assert carved_subnet(V8, 0) == ipaddress.IPv6Network("fd73:9fc2:3c34:4011:2233:4455:0:3f0/124")
    assert carved_subnet(V8, 14) == ipaddress.IPv6Network("fd73:9fc2:3c34:4011:2233:4455:0:310/124")
    for address, slot in ((V8, 15), (V16, 255)):
        with pytest.raises(AddressError, match="needs option prefix or option subnet_id"):
            carved_subnet(address, slot)      # never the block with the node's own address
    with pytest.raises(AddressError, match="zone ACP address .* no range to carve"):
        carved_subnet(ZONE, 0)


def test_subnet_addresses_and_sources() -> None:
    given = ipaddress.IPv6Network("fd73:9fc2:3c34:2002::/64")
    s = connect_subnet(ConnectConfig("a", "e1", prefix=given), ZONE)
    assert (s.source, s.dao_target, s.slaac) == ("prefix", True, True)
    assert str(s.router) == "fd73:9fc2:3c34:2002::1"
    assert str(s.relay) == "fd73:9fc2:3c34:2002:ffff:ffff:ffff:ffff"
    m = connect_subnet(ConnectConfig("a", "e1", subnet_id=1), ZONE)
    assert (m.source, m.dao_target) == ("subnet_id", True)
    v = connect_subnet(ConnectConfig("a", "e1"), V16)
    assert (v.source, v.dao_target, v.slaac) == ("carved", False, False)
    assert v.network.subnet_of(AcpAddress.decode(V16).prefix)
    assert str(v.router).endswith(":ff01") and str(v.relay).endswith(":ffff")


def test_plan_counts_carve_slots_and_finds_overlaps() -> None:
    connects = [ConnectConfig("a", "e1"), ConnectConfig("b", "e2", subnet_id=1),
                ConnectConfig("c", "e3"), ConnectConfig("d", "e4", subnet_id=1),
                ConnectConfig("e", "e5", prefix=manual_prefix(V16, 1))]
    plan = plan_subnets(connects, V16)
    assert plan["a"].network == carved_subnet(V16, 0)      # type: ignore[union-attr]
    assert plan["c"].network == carved_subnet(V16, 1)      # type: ignore[union-attr]
    assert isinstance(plan["d"], AddressError) and "overlaps connect 'b'" in str(plan["d"])
    assert isinstance(plan["e"], AddressError)
    zone = plan_subnets([ConnectConfig("a", "e1")], ZONE)
    assert isinstance(zone["a"], AddressError)
    inside = plan_subnets([ConnectConfig("x", "e1", prefix=ipaddress.IPv6Network(
        "fd73:9fc2:3c34:4011::/64"))], V8)
    assert "overlaps the node's own ACP prefix" in str(inside["x"])


def test_manual_warning() -> None:
    assert manual_warning(manual_prefix(ZONE, 3), ZONE) is None
    assert "outside the node's ACP prefix" in str(manual_warning(
        ipaddress.IPv6Network("fd00:1:2:3::/64"), ZONE))
    assert "not an ACP-Manual prefix" in str(manual_warning(
        ipaddress.IPv6Network("fd73:9fc2:3c34:1::/64"), ZONE))


def _exchange(root: RplNode, member: RplNode, now: float, rounds: int = 40) -> list[Dao]:
    """Deliver messages between two directly linked nodes; the DAOs the member sent."""
    ll = {id(root): ipaddress.IPv6Address("fe80::1"), id(member): ipaddress.IPv6Address("fe80::2")}
    daos: list[Dao] = []
    pending = [(root, root.interface_up("l", now)), (member, member.interface_up("l", now))]
    for _ in range(rounds):
        now += 0.05
        pending += [(n, n.handle_timer(now)) for n in (root, member)]
        batch, pending = pending, []
        for sender, sends in batch:
            peer = member if sender is root else root
            for send in sends:
                if isinstance(send.message, Dao):
                    daos.append(send.message)
                pending.append((peer, peer.receive("l", ll[id(sender)], send.message.code,
                                                   send.message, now, send.dst)))
    return daos


def test_rpl_extra_targets_reach_the_parent_and_are_withdrawn() -> None:
    net = manual_prefix(ZONE, 1)
    root = RplNode(RplConfig.for_address(V16, root=True), rng=random.Random(1))
    member_cfg = RplConfig.for_address(ZONE, acp_connect=True)
    assert member_cfg.preference == c.PRF_ACP_CONNECT == 0b010
    member = RplNode(member_cfg, rng=random.Random(2))
    member.set_targets(frozenset({net}), 0.0)
    _exchange(root, member, 0.0)
    learned = {t for ts in root.children().values() for t in ts}
    assert {net, member_cfg.prefix} <= learned
    assert member.set_targets(frozenset({net}), 5.0) == []        # unchanged: nothing new
    member.set_targets(frozenset(), 5.0)
    _exchange(root, member, 5.0)
    assert net not in {t for ts in root.children().values() for t in ts}   # No-Path
    assert member_cfg.prefix in {t for ts in root.children().values() for t in ts}

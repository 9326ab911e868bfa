"""The RPL engine's route plan is cached (issue 20: acpd asks for it after every input, and at
a root of N nodes building it is O(N)); every change it reads must still show."""
from __future__ import annotations

import ipaddress
import random

from acp_openwrt.rpl.dodag import RplNode
from acp_openwrt.rpl.downward import DownwardTable
from acp_openwrt.rpl.profile import RplConfig
from acp_openwrt.rpl.routes import RouteKind

BASE = int(ipaddress.IPv6Address("fd89:b714:f3db::"))


def _prefix(i: int) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network((BASE + ((i + 2) << 17), 127))


def _root() -> RplNode:
    address = ipaddress.IPv6Address(BASE + (1 << 17))
    return RplNode(RplConfig(address, ipaddress.IPv6Network((address, 127)), root=True),
                   rng=random.Random(1))


def _unicast(node: RplNode) -> set[ipaddress.IPv6Network]:
    return {r.prefix for r in node.routes() if r.kind is RouteKind.UNICAST}


def test_same_plan_object_until_the_downward_table_changes():
    node = _root()
    child = ("a1", ipaddress.IPv6Address("fe80::2"))
    other = ("a2", ipaddress.IPv6Address("fe80::3"))
    table = node._downward
    first = node.routes()
    assert node.routes() is first
    table.update(child, _prefix(1), 1, 15, 900.0, 0.0)
    plan = node.routes()
    assert plan is not first and _unicast(node) == {_prefix(1)}
    assert node.routes() is plan
    # a refresh may change which child is preferred for a target both announce
    table.update(other, _prefix(1), 1, 15, 900.0, 1.0)
    assert next(r.gateway for r in node.routes() if r.prefix == _prefix(1)) == other[1]
    table.update(child, _prefix(1), 1, 15, 900.0, 2.0)
    assert next(r.gateway for r in node.routes() if r.prefix == _prefix(1)) == child[1]
    table.remove_child(child)
    table.remove_child(other)
    assert _unicast(node) == set()
    table.update(child, _prefix(2), 1, 15, 1.0, 0.0)
    assert _unicast(node) == {_prefix(2)}
    table.expire(5.0)
    assert _unicast(node) == set()
    table.update(child, _prefix(3), 1, 15, 900.0, 0.0)
    table.update(child, _prefix(3), 1, 0, None, 1.0)  # a No-Path
    assert _unicast(node) == set()


def test_version_counts_every_change_and_nothing_else():
    table = DownwardTable()
    child = ("a1", ipaddress.IPv6Address("fe80::2"))
    v = table.version
    assert not table.remove_child(child) and not table.expire(1.0)
    assert table.version == v
    table.update(child, _prefix(1), 5, 15, 900.0, 0.0)
    assert table.version == v + 1
    assert not table.update(child, _prefix(1), 4, 15, 900.0, 1.0)  # older: ignored
    assert table.version == v + 1
    table.update(child, _prefix(1), 5, 15, 900.0, 2.0)  # a refresh
    assert table.version == v + 2

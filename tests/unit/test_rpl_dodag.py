"""The RPL engine driven by hand: one node, messages in, actions and routes out."""
from __future__ import annotations

import ipaddress
import json
import random

from acp_openwrt.identity.address import vlong_address, zone_address
from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl.dodag import RplNode
from acp_openwrt.rpl.messages import Dao, DaoAck, Dio, Dis, encode_body
from acp_openwrt.rpl.options import (
    DodagConfiguration,
    RplTarget,
    SolicitedInformation,
    TransitInformation,
)
from acp_openwrt.rpl.profile import RplConfig
from acp_openwrt.rpl.routes import DEFAULT_PREFIX, Route, RouteKind

RSUB = "area51.research.acp.example"
ROOT = vlong_address(RSUB, 7, 1).address
ME = zone_address(RSUB, 7, 2).address
CHILD = vlong_address(RSUB, 7, 3, v_bits=16)
ROOT_LL = ipaddress.IPv6Address("fe80::1")
CHILD_LL = ipaddress.IPv6Address("fe80::3")
CFG = DodagConfiguration()


def root_dio(version: int = 240, rank: int = 256, dtsn: int = 240) -> Dio:
    return Dio(0, version, rank, ROOT, True, 2, c.PRF_ROOT, dtsn, (CFG,))


def node(root: bool = False) -> RplNode:
    return RplNode(RplConfig.for_address(ROOT if root else ME, root=root), random.Random(1))


def joined() -> RplNode:
    n = node()
    n.interface_up("up", 0.0)
    n.interface_up("down", 0.0)
    n.receive("up", ROOT_LL, 1, encode_body(root_dio()), 0.0)
    return n


def run_until(n: RplNode, end: float) -> list:
    actions = []
    while (t := n.next_timer()) is not None and t <= end:
        actions += n.handle_timer(t)
    return actions


def test_root_announces_itself_on_a_new_interface():
    root = node(root=True)
    [send] = root.interface_up("acp_a", 0.0)
    assert send.dst == c.ALL_RPL_NODES and send.ifname == "acp_a"
    dio = send.message
    assert (dio.rank, dio.grounded, dio.mop, dio.preference, dio.dodag_id) == \
        (256, True, 2, 0b100, ROOT)
    assert dio.configuration == CFG
    assert send.packet()[:2] == bytes([155, 1])
    assert root.routes() == {Route(ipaddress.IPv6Network(f"{ROOT}/120"), RouteKind.BLACKHOLE)}
    periodic = run_until(root, 10.0)
    assert len(periodic) >= 4 and all(isinstance(s.message, Dio) for s in periodic)


def test_non_root_solicits_then_joins_and_advertises():
    n = node()
    [dis] = n.interface_up("up", 0.0)
    assert isinstance(dis.message, Dis) and n.role == "unattached" and n.routes() == {
        Route(ipaddress.IPv6Network(f"{ME}/127"), RouteKind.BLACKHOLE)}
    actions = n.receive("up", ROOT_LL, 1, encode_body(root_dio()), 0.0)
    assert n.role == "member" and n.rank == 1024 and n.dodag_id == ROOT
    assert [s.ifname for s in actions if isinstance(s.message, Dio)] == ["up"]  # at once
    assert Route(DEFAULT_PREFIX, RouteKind.UNICAST, ROOT_LL, "up") in n.routes()
    daos = [s for s in run_until(n, 0.2) if isinstance(s.message, Dao)]
    assert len(daos) == 1 and daos[0].dst == ROOT_LL and daos[0].message.ack_requested
    [(targets, transits)] = daos[0].message.groups()
    assert [t.prefix for t in targets] == [ipaddress.IPv6Network(f"{ME}/127")]
    assert transits[0].path_lifetime == CFG.default_lifetime and transits[0].parent is None
    assert n.daos_acknowledged == 0
    n.receive("up", ROOT_LL, 3, encode_body(DaoAck(0, daos[0].message.sequence)), 0.25)
    assert n.daos_acknowledged == 1   # the part tells the join proxy: a path to us exists now
    assert not [s for s in run_until(n, 5.0) if isinstance(s.message, Dao)]  # acknowledged
    n.receive("up", ROOT_LL, 3, encode_body(DaoAck(0, daos[0].message.sequence)), 5.1)
    assert n.daos_acknowledged == 1   # a stale or repeated ACK is no news


def test_slow_link_rank_factor():
    n = node()
    n.interface_up("up", 0.0, rank_factor=c.LOW_SPEED_FACTOR)
    n.receive("up", ROOT_LL, 1, encode_body(root_dio()), 0.0)
    assert n.rank == 4096


def test_dis_handling():
    n = joined()
    run_until(n, 30.0)  # Trickle has grown well past Imin
    [reply] = n.receive("down", CHILD_LL, 0, encode_body(Dis()), 30.0, dst=CHILD_LL)
    assert reply.dst == CHILD_LL and reply.message.configuration is not None
    assert n.next_timer() > 31.0  # a unicast DIS leaves Trickle alone
    assert n.receive("down", CHILD_LL, 0, encode_body(Dis()), 30.0) == []
    assert n.next_timer() <= 30.0 + CFG.imin  # a multicast DIS resets it
    wrong = Dis((SolicitedInformation(dodag_id=ipaddress.IPv6Address("fd00::9")),))
    assert n.receive("down", CHILD_LL, 0, encode_body(wrong), 31.0, dst=CHILD_LL) == []


def test_new_version_is_followed_and_old_one_ignored():
    n = joined()
    n.receive("up", ROOT_LL, 1, encode_body(root_dio(version=241)), 1.0)
    assert n.version == 241 and n.role == "member"
    n.receive("up", ROOT_LL, 1, encode_body(root_dio(version=240)), 2.0)
    assert n.version == 241


def test_storing_mode_routes_no_path_and_expiry():
    n = joined()
    run_until(n, 1.0)
    child = CHILD.prefix
    dao = Dao(0, 10, True, None, (RplTarget(child), TransitInformation(240, 1)))
    [ack] = n.receive("down", CHILD_LL, 2, encode_body(dao), 1.0)
    assert isinstance(ack.message, DaoAck) and ack.message.sequence == 10 and ack.dst == CHILD_LL
    assert Route(child, RouteKind.UNICAST, CHILD_LL, "down") in n.routes()
    upward = [s.message for s in run_until(n, 1.5) if isinstance(s.message, Dao)]
    assert child in {t.prefix for m in upward for ts, _ in m.groups() for t in ts}
    for m in upward:
        n.receive("up", ROOT_LL, 3, encode_body(DaoAck(0, m.sequence)), 1.5)
    no_path = Dao(0, 11, False, None, (RplTarget(child), TransitInformation(240, 0)))
    assert n.receive("down", CHILD_LL, 2, encode_body(no_path), 2.0) == []
    assert all(r.prefix != child for r in n.routes())
    withdrawn = [tr[0].path_lifetime for s in run_until(n, 2.5) if isinstance(s.message, Dao)
                 for ts, tr in s.message.groups() for t in ts if t.prefix == child]
    assert withdrawn and set(withdrawn) == {0}  # the No-Path travels up (and is retried)
    n.receive("down", CHILD_LL, 2, encode_body(dao), 3.0)
    run_until(n, 3.0 + CFG.lifetime_unit + 1)  # lifetime 1 unit = 60 s, never refreshed
    assert all(r.prefix != child for r in n.routes())


def test_hostile_dao_targets_and_dao_from_parent():
    n = joined()
    bad = [ipaddress.IPv6Network("::/0"), ipaddress.IPv6Network("fd00::/8"),
           ipaddress.IPv6Network(f"{ME}/128"), ipaddress.IPv6Network("fe80::/64"),
           ipaddress.IPv6Network("ff02::1a/128")]
    options = tuple(RplTarget(p) for p in bad) + (TransitInformation(240, 15),)
    n.receive("down", CHILD_LL, 2, encode_body(Dao(0, 1, True, None, options)), 1.0)
    assert {r.prefix for r in n.routes()} == {DEFAULT_PREFIX, ipaddress.IPv6Network(f"{ME}/127")}
    [reject] = n.receive("up", ROOT_LL, 2, encode_body(Dao(0, 2, True, None, (
        RplTarget(CHILD.prefix), TransitInformation(240, 15)))), 1.0)
    assert reject.message.status >= c.DAO_ACK_REJECT


def test_interface_down_detaches_then_rejoins_after_hold_down():
    n = joined()
    n.receive("down", CHILD_LL, 2, encode_body(Dao(0, 1, False, None, (
        RplTarget(CHILD.prefix), TransitInformation(240, 15)))), 0.5)
    actions = n.interface_down("up", 1.0)
    assert n.role == "floating-root" and n.dodag_id == ME
    assert [s.ifname for s in actions if isinstance(s.message, Dio)] == ["down"]
    assert all(r.prefix != DEFAULT_PREFIX for r in n.routes())
    assert any(r.prefix == CHILD.prefix for r in n.routes())  # local connectivity stays
    n.interface_up("up", 1.1)
    n.receive("up", ROOT_LL, 1, encode_body(root_dio()), 1.2)
    assert n.role == "floating-root"  # the Version we left is held down
    solicit = [s for s in run_until(n, 2.1) if isinstance(s.message, Dis)]
    assert solicit  # hold-down over: ask for fresh DIOs
    n.receive("up", ROOT_LL, 1, encode_body(root_dio()), 2.2)
    assert n.role == "member" and n.rank == 1024


def test_parent_silence_and_status_json():
    n = joined()
    status = json.loads(json.dumps(n.status()))
    assert status["role"] == "member" and status["rank"] == 1024
    assert status["dodag_id"] == str(ROOT)
    assert status["parents"] == [{"address": "fe80::1", "ifname": "up", "preferred": True,
                                  "rank": 256}]
    assert {r["kind"] for r in status["routes"]} == {"unicast", "blackhole"}
    run_until(n, 3 * CFG.imin * (1 << CFG.dio_interval_doublings) + 1)
    assert n.role == "floating-root" and n.parents == []  # the root's DIOs stopped


def test_dtsn_increment_triggers_dao():
    n = joined()
    run_until(n, 1.0)
    actions = n.receive("up", ROOT_LL, 1, encode_body(root_dio(dtsn=241)), 1.0)
    actions += run_until(n, 1.5)
    assert any(isinstance(s.message, Dao) for s in actions)

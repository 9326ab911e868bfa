"""What unstrung's sunshine sends, byte for byte (../shared/spec/rpl-vectors-unstrung.md), through
the codec, the engine and the transport's receive filter: RPL receives liberally, sends strictly.

The hex is the whole ICMPv6 message as captured (type 155, code, checksum, body).
"""
from __future__ import annotations

import ipaddress
import random
import socket
import struct

import pytest

from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl.actions import Send
from acp_openwrt.rpl.dodag import RplNode
from acp_openwrt.rpl.messages import Dao, DaoAck, Dio, Dis, decode_packet, encode_body
from acp_openwrt.rpl.options import (
    RFC6550_DEFAULTS,
    DodagConfiguration,
    PrefixInformation,
    RplTarget,
    SolicitedInformation,
    TransitInformation,
)
from acp_openwrt.rpl.profile import RplConfig
from acp_openwrt.rpl.routes import DEFAULT_PREFIX, Route, RouteKind
from acp_openwrt.rpl.transport import RplTransport

# rpl-vectors-unstrung.md, verbatim.
UNSTRUNG_DIO = [
    "9b0116600001000198010000fde3b0c4429800000000000012340002081e3040000000000000000000000000"
    "fd00123400000000000000000000000000000000",
    "9b01165f0001000198020000fde3b0c4429800000000000012340002081e3040000000000000000000000000"
    "fd00123400000000000000000000000000000000",
]
UNSTRUNG_DIS = "9b00550700000713004000000000000000000000000000000000000000000000"
UNSTRUNG_DAO = [
    "9b02e40700c00002fde3b0c442980000000000001234000205120080"
    "fde3b0c442980000000000001234000400000000",
    "9b02e40600c00003fde3b0c442980000000000001234000205120080"
    "fde3b0c442980000000000001234000400000000",
]
DODAG = ipaddress.IPv6Address("fde3:b0c4:4298::1234:2")     # the capture's root (a Zone address)
MEMBER = ipaddress.IPv6Address("fde3:b0c4:4298::1234:4")    # the capture's unstrung member
MEMBER_TARGET = ipaddress.IPv6Network(f"{MEMBER}/128")
UNSTRUNG_LL = ipaddress.IPv6Address("fe80::ec99:3bff:fe96:e37c")
ROOT_LL = ipaddress.IPv6Address("fe80::a0bb:62ff:fe9f:6b1d")


def packet(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr)


def body(hexstr: str) -> bytes:
    return packet(hexstr)[4:]


def project_root(**kwargs) -> RplNode:
    """A project root whose DODAGID is the capture's, as it was when unstrung sent these DAOs."""
    return RplNode(RplConfig.for_address(DODAG, root=True, **kwargs), random.Random(1))


def project_member() -> RplNode:
    return RplNode(RplConfig.for_address(MEMBER), random.Random(2))


def sends(actions: list[Send], kind: type) -> list[Send]:
    return [a for a in actions if isinstance(a.message, kind)]


def run_until(node: RplNode, end: float) -> list[Send]:
    actions: list[Send] = []
    while (t := node.next_timer()) is not None and t <= end:
        actions += node.handle_timer(t)
    return actions


# ------------------------------------------------------------------ codec
def test_codec_decodes_unstrungs_dio_with_mop_3_and_no_configuration():
    first, second = (decode_packet(packet(h)) for h in UNSTRUNG_DIO)
    assert first == Dio(0, 1, 1, DODAG, grounded=True, mop=3, preference=0, dtsn=1, options=(
        PrefixInformation(ipaddress.IPv6Network("fd00:1234::/48"), autonomous=True),))
    assert first.configuration is None
    assert second.dtsn == 2 and second.rank == 1


def test_codec_decodes_unstrungs_dis_and_dao():
    dis = decode_packet(packet(UNSTRUNG_DIS))
    assert dis == Dis((SolicitedInformation(instance_id=0),))
    for seq, hexstr in zip((2, 3), UNSTRUNG_DAO, strict=True):
        dao = decode_packet(packet(hexstr))
        assert dao == Dao(0, seq, True, DODAG, (RplTarget(MEMBER_TARGET),))
        # RFC 6550 §6.7.8: the Transit Information option MAY be absent; the target is kept.
        assert dao.groups() == [((RplTarget(MEMBER_TARGET),), ())]


def test_rfc6550_defaults_are_the_rfcs():
    """§6.7.6 and §17 give defaults for PCS, the Trickle fields and MinHopRankIncrease only."""
    d = RFC6550_DEFAULTS
    assert (d.path_control_size, d.dio_interval_doublings, d.dio_interval_min, d.dio_redundancy,
            d.min_hop_rank_increase) == (0, 20, 3, 10, 256)
    assert d.imin == 0.008
    # No RFC default: MaxRankIncrease 0 (mechanism disabled), OF0, infinite route lifetime.
    assert (d.max_rank_increase, d.ocp, d.default_lifetime, d.lifetime_unit) == (0, 0, 0xFF, 0xFFFF)
    assert d.lifetime_seconds(d.default_lifetime) is None


# ----------------------------------------------------- engine: member side
def test_member_joins_an_unstrung_root_and_sends_strict_daos():
    n = project_member()
    n.interface_up("acp0", 0.0)
    actions = n.receive("acp0", ROOT_LL, 1, body(UNSTRUNG_DIO[0]), 0.0)
    assert n.role == "member" and n.dodag_id == DODAG and n.version == 1
    assert n.parents == [("acp0", ROOT_LL)]
    assert n.rank == 256 + 768  # rank 1 is read as ROOT_RANK (RFC 6550 §8.2.2.2 rule 2)
    assert n.dodag_config == RFC6550_DEFAULTS
    assert Route(DEFAULT_PREFIX, RouteKind.UNICAST, ROOT_LL, "acp0") in n.routes()
    [dio] = sends(actions, Dio)
    # Strict out: we copy the root's MOP (§9.2 rule 1) and still carry a DODAG Configuration.
    assert dio.message.mop == 3 and dio.message.configuration == RFC6550_DEFAULTS
    assert dio.message.rank == 1024 and dio.message.dodag_id == DODAG
    [dao] = sends(run_until(n, 0.2), Dao)
    assert dao.dst == ROOT_LL and dao.message.ack_requested and dao.message.dodag_id is None
    [(targets, transits)] = dao.message.groups()
    assert [t.prefix for t in targets] == [ipaddress.IPv6Network(f"{MEMBER}/127")]
    assert transits == (TransitInformation(transits[0].path_sequence, 0xFF),)
    counters = n.counters()
    assert counters["dio_without_configuration"] == 1 and counters["dio_rank_below_root"] == 1
    # unstrung's DAO-ACK: D set with the DODAGID (build_daoack); accepted, no retry follows.
    ack = DaoAck(0, dao.message.sequence, 0, DODAG)
    assert n.receive("acp0", ROOT_LL, 3, encode_body(ack), 0.21) == []
    assert not sends(run_until(n, 2.0), Dao)
    assert n.status()["mop"] == 3


def test_member_ignores_a_dao_ack_for_another_dodag():
    n = project_member()
    n.interface_up("acp0", 0.0)
    n.receive("acp0", ROOT_LL, 1, body(UNSTRUNG_DIO[0]), 0.0)
    [dao] = sends(run_until(n, 0.2), Dao)
    other = ipaddress.IPv6Address("fd00::99")
    n.receive("acp0", ROOT_LL, 3, encode_body(DaoAck(0, dao.message.sequence, 0, other)), 0.21)
    assert sends(run_until(n, 0.5), Dao)  # not taken as the answer: retried
    assert n.counters()["dao_ack_other_dodag"] == 1


def test_unsupported_mop_is_counted_not_a_decode_error():
    n = project_member()
    n.interface_up("acp0", 0.0)
    for mop in (0, 1, 4):
        dio = bytearray(body(UNSTRUNG_DIO[0]))
        dio[4] = (dio[4] & 0xC7) | mop << 3
        assert n.receive("acp0", ROOT_LL, 1, bytes(dio), 0.0) == []
    assert n.role == "unattached"
    assert n.counters()["dio_mop_unsupported"] == 3 and n.decode_errors == 0


# ------------------------------------------------------- engine: root side
def test_root_routes_unstrungs_dao_without_transit_and_says_so():
    root = project_root()
    root.interface_up("acp0", 0.0)
    root.receive("acp0", UNSTRUNG_LL, 0, body(UNSTRUNG_DIS), 0.0)
    [ack] = root.receive("acp0", UNSTRUNG_LL, 2, body(UNSTRUNG_DAO[0]), 0.1,
                         dst=ipaddress.IPv6Address("fe80::c83e:9eff:fe58:601"))
    assert ack.dst == UNSTRUNG_LL and ack.ifname == "acp0"
    # Status 0 and the D flag with our DODAGID: what a sunshine member needs to commit its parent.
    assert ack.message == DaoAck(0, 2, c.DAO_ACK_ACCEPT, DODAG)
    assert ack.packet()[4:].hex() == "00800200" + DODAG.packed.hex()
    assert Route(MEMBER_TARGET, RouteKind.UNICAST, UNSTRUNG_LL, "acp0") in root.routes()
    assert root.children() == {("acp0", UNSTRUNG_LL): [MEMBER_TARGET]}
    assert root.counters()["dao_without_transit"] == 1
    # The route lives for the DODAG's Default Lifetime, refreshed by the next DAO.
    lifetime = root.dodag_config.lifetime_seconds(root.dodag_config.default_lifetime)
    [ack] = root.receive("acp0", UNSTRUNG_LL, 2, body(UNSTRUNG_DAO[1]), lifetime - 1)
    assert ack.message.status == c.DAO_ACK_ACCEPT and ack.message.sequence == 3
    run_until(root, 2 * lifetime - 2)
    assert MEMBER_TARGET in {r.prefix for r in root.routes()}
    run_until(root, 2 * lifetime)
    assert MEMBER_TARGET not in {r.prefix for r in root.routes()}


def test_member_passes_a_transitless_target_up_with_the_default_lifetime():
    n = project_member()
    n.interface_up("up", 0.0)
    n.interface_up("down", 0.0)
    n.receive("up", ROOT_LL, 1, body(UNSTRUNG_DIO[0]), 0.0)
    run_until(n, 0.2)
    child = ipaddress.IPv6Network("fde3:b0c4:4298::1234:8/128")
    dao = Dao(0, 9, True, DODAG, (RplTarget(child),))
    [ack] = n.receive("down", UNSTRUNG_LL, 2, encode_body(dao), 0.3)
    assert ack.message.status == c.DAO_ACK_ACCEPT and ack.message.dodag_id == DODAG
    upward = [s.message for s in run_until(n, 0.5) if isinstance(s.message, Dao)]
    lifetimes = {tr[0].path_lifetime for m in upward for ts, tr in m.groups() for t in ts
                 if t.prefix == child}
    assert lifetimes == {n.dodag_config.default_lifetime}


def test_strict_node_rejects_a_dao_without_transit():
    root = project_root(accept_dao_without_transit=False)
    root.interface_up("acp0", 0.0)
    [ack] = root.receive("acp0", UNSTRUNG_LL, 2, body(UNSTRUNG_DAO[0]), 0.1)
    assert ack.message.status >= c.DAO_ACK_REJECT
    assert MEMBER_TARGET not in {r.prefix for r in root.routes()}
    assert root.counters()["dao_rejected"] == 1


OWN = ipaddress.IPv6Network(f"{DODAG}/128")
BAD_DAOS = [
    ("target inside our own prefix", Dao(0, 1, True, None, (RplTarget(OWN),
                                                            TransitInformation(240, 15)))),
    ("a good target with a bad one", Dao(0, 2, True, None, (
        RplTarget(MEMBER_TARGET), RplTarget(ipaddress.IPv6Network("fe80::/64")),
        TransitInformation(240, 15)))),
    ("multicast listener (MOP 3)", Dao(0, 3, True, None, (
        RplTarget(ipaddress.IPv6Network("ff05::1234/128")), TransitInformation(240, 15)))),
    ("no target at all", Dao(0, 4, True, None, ())),
    ("another DODAG", Dao(0, 5, True, ipaddress.IPv6Address("fd00::1"),
                          (RplTarget(MEMBER_TARGET), TransitInformation(240, 15)))),
    ("another instance", Dao(1, 6, True, None, (RplTarget(MEMBER_TARGET),
                                                TransitInformation(240, 15)))),
]


@pytest.mark.parametrize("why,dao", BAD_DAOS, ids=[b[0] for b in BAD_DAOS])
def test_a_dao_that_cannot_be_honoured_gets_a_rejection(why, dao):
    root = project_root()
    root.interface_up("acp0", 0.0)
    before = root.routes()
    [ack] = root.receive("acp0", UNSTRUNG_LL, 2, encode_body(dao), 0.1)
    assert ack.message.status >= c.DAO_ACK_REJECT, why
    assert ack.message.sequence == dao.sequence and ack.message.instance_id == dao.instance_id
    assert root.routes() == before and root.children() == {}
    assert root.counters()["dao_rejected"] == 1


def test_status_zero_always_means_every_target_is_routed():
    """Random DAOs, good and bad: an accepting DAO-ACK only ever follows installed routes."""
    rng = random.Random(7)
    root = project_root()
    root.interface_up("acp0", 0.0)
    pool = [MEMBER_TARGET, OWN, ipaddress.IPv6Network("fde3:b0c4:4298::1234:100/120"),
            ipaddress.IPv6Network("fe80::/64"), ipaddress.IPv6Network("::/0"),
            ipaddress.IPv6Network("fde3:b0c4:4298:1::/64"),
            ipaddress.IPv6Network("ff02::1a/128")]
    accepted = 0
    for seq in range(200):
        targets = tuple(RplTarget(p) for p in rng.sample(pool, rng.randint(0, 3)))
        transit = (TransitInformation(240 + seq % 10, rng.choice((15, 15, 0))),) \
            if targets and rng.random() < 0.7 else ()  # a Transit needs a Target before it
        dao = Dao(0, seq % 256, True, rng.choice((None, DODAG)), targets + transit)
        [ack] = root.receive("acp0", UNSTRUNG_LL, 2, encode_body(dao), float(seq))
        if ack.message.status == c.DAO_ACK_ACCEPT:
            accepted += 1
            routed = {r.prefix for r in root.routes() if r.kind is RouteKind.UNICAST}
            for t in targets:
                withdrawn = transit and transit[0].path_lifetime == 0
                assert withdrawn or t.prefix in routed, (dao, root.routes())
    assert 10 < accepted < 190


# ------------------------------------------------------- transport filter
def _anc(ifindex: int, hoplimit: int, dst: str) -> list[tuple[int, int, bytes]]:
    return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
             ipaddress.IPv6Address(dst).packed + struct.pack("=I", ifindex)),
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("=i", hoplimit))]


def test_transport_takes_unstrungs_hop_limit_1_and_guards_by_scope():
    got: list[tuple] = []
    transport = RplTransport("unused", lambda *args: got.append(args))
    transport._by_index[4] = "acp0"
    transport._by_name["acp0"] = 4
    src = (str(UNSTRUNG_LL), 0, 0, 4)
    transport._handle(packet(UNSTRUNG_DIS), _anc(4, 1, "ff02::1a"), src)
    transport._handle(packet(UNSTRUNG_DIO[0]), _anc(4, 1, "ff02::1a"), src)
    transport._handle(packet(UNSTRUNG_DAO[0]), _anc(4, 255, "fe80::1"), src)
    assert [(g[2], g[3]) for g in got] == [(0, body(UNSTRUNG_DIS)), (1, body(UNSTRUNG_DIO[0])),
                                          (2, body(UNSTRUNG_DAO[0]))]
    assert transport.counters["received_hop_limit_not_255"] == 2
    # Link-local scope is the guard: neither a routed source nor a routed destination.
    transport._handle(packet(UNSTRUNG_DAO[0]), _anc(4, 64, str(DODAG)), src)
    transport._handle(packet(UNSTRUNG_DIO[0]), _anc(4, 1, "ff02::1"), src)
    transport._handle(packet(UNSTRUNG_DIO[0]), _anc(4, 1, "ff05::1a"), src)
    transport._handle(packet(UNSTRUNG_DIO[0]), _anc(4, 1, "ff02::1a"), (str(MEMBER), 0, 0, 4))
    assert len(got) == 3
    assert transport.counters["drop_not_link_local_destination"] == 3
    assert transport.counters["drop_not_link_local"] == 1


def test_default_config_still_sends_the_profile():
    """Liberal in, strict out: a project root announces MOP 2 and its DODAG Configuration."""
    root = project_root()
    [dio] = root.interface_up("acp0", 0.0)
    assert dio.message.mop == c.MOP_STORING_NO_MULTICAST
    assert dio.message.configuration == DodagConfiguration()
    assert dio.message.rank == c.DEFAULT_MIN_HOP_RANK_INCREASE

"""RPL building blocks: lollipop counters, Trickle, OF0, route plan diff, profile, DAO packing."""
from __future__ import annotations

import ipaddress
import random

import pytest

from acp_openwrt.identity.address import manual_address, vlong_address, zone_address
from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl import sequence
from acp_openwrt.rpl.dao import DaoSender
from acp_openwrt.rpl.messages import decode_message, encode_body
from acp_openwrt.rpl.of0 import dag_rank, rank_factor_for_speed, rank_via
from acp_openwrt.rpl.profile import RplConfig
from acp_openwrt.rpl.routes import Route, RouteKind, diff, lookup
from acp_openwrt.rpl.trickle import Trickle

RSUB = "area51.research.acp.example"
LL = ipaddress.IPv6Address("fe80::1")


def test_lollipop_rfc_examples():
    assert sequence.compare(240, 5) == 1      # 256 + 5 - 240 = 21 > 16: 240 is greater
    assert sequence.compare(250, 5) == -1     # 11 <= 16: 5 is greater
    assert sequence.compare(5, 250) == 1
    assert sequence.compare(241, 240) == 1 and sequence.compare(240, 241) == -1
    assert sequence.compare(0, 127) == 1      # circular wrap is one step
    assert sequence.compare(10, 100) is None  # desynchronised
    assert sequence.compare(7, 7) == 0
    assert sequence.newer(10, 100) and not sequence.newer(5, 6)


def test_lollipop_increment():
    assert sequence.increment(240) == 241
    assert sequence.increment(255) == 0
    assert sequence.increment(127) == 0
    value = sequence.INITIAL_SEQUENCE
    for _ in range(400):  # every step is newer than the one before, through both wraps
        following = sequence.increment(value)
        assert sequence.compare(following, value) == 1
        value = following
    with pytest.raises(ValueError):
        sequence.increment(256)


def test_trickle_doubles_and_caps():
    trickle = Trickle(1.0, 3, 0, random.Random(1))
    trickle.start(0.0)
    sends = []
    now = 0.0
    while now < 100:
        now = trickle.next_event()
        if trickle.poll(now):
            sends.append(now)
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert 0.5 <= sends[0] < 1.0
    assert max(gaps) < 2 * 8.0 and trickle.interval == 8.0  # Imax = 1 s * 2^3
    assert len(sends) >= 12


def test_trickle_suppresses_with_k_and_resets():
    trickle = Trickle(1.0, 4, 1, random.Random(2))
    trickle.start(0.0)
    trickle.heard_consistent()  # c >= k: this interval's transmission is suppressed
    assert not trickle.poll(trickle.next_event())
    while trickle.interval < 16.0:
        trickle.poll(trickle.next_event())
    trickle.reset(100.0)
    assert trickle.interval == 1.0 and 100.5 <= trickle.next_event() < 101.0
    trickle.reset(100.2)  # already at Imin: nothing changes
    assert trickle.interval == 1.0


def test_trickle_k_zero_never_suppresses():
    trickle = Trickle(1.0, 2, 0, random.Random(3))
    trickle.start(0.0)
    for _ in range(50):
        trickle.heard_consistent()
    assert trickle.poll(trickle.next_event())


def test_trickle_after_a_long_sleep():
    trickle = Trickle(0.1, 2, 0, random.Random(4))
    trickle.start(0.0)
    assert trickle.poll(10_000.0)  # one transmission, not thousands, and a future next event
    assert trickle.next_event() > 10_000.0


def test_of0_ranks_from_digest():
    assert rank_via(256, 256, 1) == 1024          # root 256 + (1 * 3 + 0) * 256
    assert rank_via(256, 256, 5) == 4096          # slow link, rank factor 5
    assert dag_rank(1024, 256) == 4 and dag_rank(27, 16) == 1
    assert rank_via(c.INFINITE_RANK - 10, 256, 1) == c.INFINITE_RANK
    assert rank_factor_for_speed(100) == 5 and rank_factor_for_speed(1000) == 1
    assert rank_factor_for_speed(None) == 1


def test_profile_prefix_and_preference_by_scheme_and_role():
    cases = [(zone_address(RSUB, 1, 2), 127), (vlong_address(RSUB, 1, 2, 8), 120),
             (vlong_address(RSUB, 1, 2, 16), 112), (manual_address(RSUB, 3, 1), 64)]
    for acp, length in cases:
        cfg = RplConfig.for_address(acp.address)
        assert cfg.prefix.prefixlen == length and cfg.address in cfg.prefix
    address = zone_address(RSUB, 1, 2).address
    assert RplConfig.for_address(address, root=True).preference == 0b100
    assert RplConfig.for_address(address, registrar=True).preference == 0b011
    assert RplConfig.for_address(address, acp_connect=True).preference == 0b010
    assert RplConfig.for_address(address).preference == 0b001
    with pytest.raises(ValueError):
        RplConfig(address, ipaddress.IPv6Network("fd00::/64"))


def test_route_diff_and_lookup():
    a = Route(ipaddress.IPv6Network("::/0"), RouteKind.UNICAST, LL, "acp_1")
    b = Route(ipaddress.IPv6Network("fd00::/120"), RouteKind.BLACKHOLE)
    a2 = Route(ipaddress.IPv6Network("::/0"), RouteKind.UNICAST, LL, "acp_2")
    change = diff({a, b}, {a2, b})
    assert change.add == (a2,) and change.remove == (a,)
    assert not diff({a, b}, {b, a})
    assert lookup({a, b}, ipaddress.IPv6Address("fd00::5")) == b
    assert lookup({a, b}, ipaddress.IPv6Address("fd01::5")) == a
    assert lookup({b}, ipaddress.IPv6Address("fd01::5")) is None
    assert a.to_json() == {"prefix": "::/0", "kind": "unicast", "gateway": "fe80::1",
                           "ifname": "acp_1"}


def test_dao_sender_packs_below_mtu_and_withdraws():
    sender = DaoSender()
    parent = ("acp_1", LL)
    adverts = {ipaddress.IPv6Network((0xFD00 << 112 | i << 8, 120)): (i % 7, 15)
               for i in range(150)}
    messages = sender.advertise(parent, adverts, 0.0)
    assert len(messages) > 1
    seen = {}
    for message in messages:
        body = encode_body(message)
        assert len(body) <= c.MAX_DAO_BODY and message.ack_requested
        for targets, transits in decode_message(2, body).groups():
            for target in targets:
                seen[target.prefix] = (transits[0].path_sequence, transits[0].path_lifetime)
    assert seen == adverts
    assert len({m.sequence for m in messages}) == len(messages)
    # One target disappears: the next DAO carries it as a No-Path.
    gone = next(iter(adverts))
    del adverts[gone]
    withdrawn = {t.prefix: tr[0].path_lifetime for m in sender.advertise(parent, adverts, 1.0)
                 for ts, tr in m.groups() for t in ts}
    assert withdrawn[gone] == 0 and len(withdrawn) == 150


def test_dao_sender_retries_then_fails():
    sender = DaoSender(ack_timeout=0.25, retries=3)
    parent = ("acp_1", LL)
    [message] = sender.advertise(parent, {ipaddress.IPv6Network("fd00::/127"): (240, 15)}, 0.0)
    resent = []
    now = 0.0
    while sender.next_timer() is not None:
        now = sender.next_timer()
        again, failed = sender.poll(now)
        resent += again
        if failed:
            break
    assert [m for _p, m in resent] == [message] * 3 and failed == [parent]
    assert now == pytest.approx(1.0)  # three retries 256 ms apart, then give up
    [message] = sender.advertise(parent, {ipaddress.IPv6Network("fd00::/127"): (241, 15)}, 2.0)
    assert sender.acknowledge(parent, message.sequence, 0) is True
    assert sender.acknowledge(parent, message.sequence, 0) is None  # duplicate ACK
    assert sender.next_timer() is None

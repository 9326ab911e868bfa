"""The adjacency table: new, refreshed, changed, expired, dropped with its link; and what a
stranger spoofing thousands of neighbours cannot do to it (issue 15): fill another link, evict
a confirmed neighbour, keep a fake forever, keep a newcomer out."""
from __future__ import annotations

import pytest

from acp_openwrt.discovery.adjacency import (
    BY_CHANNEL,
    BY_REHEARD,
    AdjacencyTable,
    Confirmed,
    Limits,
)
from acp_openwrt.events import AdjacencyDown, AdjacencyUp

IKE = ("IKEv2",)
TTL = 210_000  # ms, as RFC 8994 §6.4 floods


def fake(n: int) -> str:
    return f"fe80::a:{n:x}"


def flood(table: AdjacencyTable, ifname: str, count: int, now: float, start: int = 1) -> list:
    out = []
    for n in range(start, start + count):
        out += table.heard(fake(n), ifname, IKE, 500, 0, now)
    return out


def test_lifecycle() -> None:
    table = AdjacencyTable()
    assert table.heard("fe80::1", "eth0", IKE, 500, TTL, now=0) == [
        AdjacencyUp("fe80::1", "eth0", IKE, 500)]
    assert table.heard("fe80::1", "eth0", IKE, 500, TTL, now=60) == []  # refresh only
    assert table.expire(now=269) == []
    changed = table.heard("fe80::1", "eth0", ("IKEv2", "DTLS"), 500, TTL, now=100)
    assert changed == [Confirmed("fe80::1", "eth0", BY_REHEARD),  # 3 floods over 100 s
                       AdjacencyUp("fe80::1", "eth0", ("IKEv2", "DTLS"), 500)]
    table.heard("fe80::1", "eth1", IKE, 500, 10_000, now=100)  # same peer, other link
    assert table.next_expiry() == 110
    assert table.expire(now=111) == [AdjacencyDown("fe80::1", "eth1")]
    assert table.expire(now=309) == []
    assert table.drop_interface("eth0") == [AdjacencyDown("fe80::1", "eth0")]
    assert table.entries == {} and table.next_expiry() is None


def test_listing_carries_peer_interface_methods() -> None:
    table = AdjacencyTable()
    table.heard("fe80::2", "br-lan", IKE, 500, TTL, now=0)
    [entry] = table.to_list(now=10, wall_offset=1000)
    assert entry["peer"] == "fe80::2" and entry["interface"] == "br-lan"
    assert entry["methods"] == ["IKEv2"] and entry["ttl_s"] == 200
    assert entry["first_seen"] == 1000 and entry["confirmed"] is None


def test_ttl_zero_is_the_default_lifetime_not_forever() -> None:
    table = AdjacencyTable()  # RFC 8994 defaults: 210 s
    table.heard("fe80::1", "eth0", IKE, 500, 0, now=0)
    assert table.expire(now=209) == []
    assert table.expire(now=210) == [AdjacencyDown("fe80::1", "eth0")]
    assert table.counters["ttl_capped"] == 1


def test_huge_ttl_is_capped_small_ttl_floored() -> None:
    table = AdjacencyTable(Limits.for_interval(2.0))  # a lab's 2 s period: at most 7 s
    table.heard("fe80::1", "eth0", IKE, 500, 2**32 - 1, now=0)
    table.heard("fe80::2", "eth0", IKE, 500, 1, now=0)
    assert table.next_expiry() == 1.0
    assert table.expire(now=1.0) == [AdjacencyDown("fe80::2", "eth0")]
    assert table.expire(now=6.9) == []
    assert table.expire(now=7.0) == [AdjacencyDown("fe80::1", "eth0")]
    assert table.counters["ttl_capped"] == 1


def test_a_flood_on_one_link_never_locks_out_another() -> None:
    """The issue: 5000 fakes on one link filled the node's table; a real neighbour on another
    interface was never heard again."""
    table = AdjacencyTable(Limits(per_interface=256, total=4096))
    flood(table, "eth0", 5000, now=0)
    assert sum(1 for peer, ifname in table.entries if ifname == "eth0") == 256
    assert table.counters["evicted"] == 5000 - 256
    assert table.heard("fe80::1", "eth1", IKE, 500, TTL, now=1) == [
        AdjacencyUp("fe80::1", "eth1", IKE, 500)]
    assert table.counters["table_full_drops"] == table.counters["interface_full_drops"] == 0


def test_a_newcomer_on_the_flooded_link_evicts_the_least_recently_heard_fake() -> None:
    table = AdjacencyTable(Limits(per_interface=8))
    flood(table, "eth0", 8, now=0)
    table.heard(fake(1), "eth0", IKE, 500, TTL, now=1)  # fake 1 heard again: 2 is now oldest
    out = table.heard("fe80::1", "eth0", IKE, 500, TTL, now=2)
    assert out == [AdjacencyDown(fake(2), "eth0"), AdjacencyUp("fe80::1", "eth0", IKE, 500)]
    assert ("fe80::1", "eth0") in table.entries and (fake(1), "eth0") in table.entries


def test_a_confirmed_neighbour_is_never_evicted_only_expired() -> None:
    table = AdjacencyTable(Limits(per_interface=8))
    table.heard("fe80::1", "eth0", IKE, 500, TTL, now=0)
    assert table.confirm("fe80::1", "eth0") == Confirmed("fe80::1", "eth0", BY_CHANNEL)
    assert table.confirm("fe80::1", "eth0") is None  # once
    assert table.confirm("fe80::99", "eth0") is None  # no such entry
    downs = [e for e in flood(table, "eth0", 10_000, now=1) if isinstance(e, AdjacencyDown)]
    assert AdjacencyDown("fe80::1", "eth0") not in downs
    assert table.entries[("fe80::1", "eth0")].confirmed == BY_CHANNEL
    assert table.expire(now=210) == [AdjacencyDown("fe80::1", "eth0")]


def test_heard_again_over_a_period_confirms_and_such_confirmations_are_capped() -> None:
    table = AdjacencyTable(Limits(per_interface=16, max_reheard=2, confirm_floods=3,
                                  confirm_span_s=60))
    for n in (1, 2, 3):
        table.heard(fake(n), "eth0", IKE, 500, TTL, now=0)
        table.heard(fake(n), "eth0", IKE, 500, TTL, now=30)
        assert table.heard(fake(n), "eth0", IKE, 500, TTL, now=59) == []  # span too short
    got = [table.heard(fake(n), "eth0", IKE, 500, TTL, now=60) for n in (1, 2, 3)]
    assert got == [[Confirmed(fake(1), "eth0", BY_REHEARD)],
                   [Confirmed(fake(2), "eth0", BY_REHEARD)], []]
    assert table.counters["reheard_refused"] == 1
    assert table.confirmed_count() == {BY_CHANNEL: 0, BY_REHEARD: 2, "answer": 0}
    # a channel moves fake 1 out of the re-heard quota: fake 3 may now take that place
    assert table.confirm(fake(1), "eth0") == Confirmed(fake(1), "eth0", BY_CHANNEL)
    assert table.heard(fake(3), "eth0", IKE, 500, TTL, now=61) == [
        Confirmed(fake(3), "eth0", BY_REHEARD)]
    # the link's quota minus what is confirmed is left to newcomers
    flood(table, "eth0", 100, now=62, start=100)
    assert sum(1 for e in table.entries.values() if e.confirmed is None) == 16 - 3


def test_a_link_full_of_confirmed_neighbours_refuses_newcomers_counted() -> None:
    table = AdjacencyTable(Limits(per_interface=2))
    for n in (1, 2):
        table.heard(fake(n), "eth0", IKE, 500, TTL, now=0)
        table.confirm(fake(n), "eth0")
    assert table.heard(fake(3), "eth0", IKE, 500, TTL, now=1) == []
    assert table.counters["interface_full_drops"] == 1 and len(table.entries) == 2


def test_a_full_node_evicts_from_the_link_with_most_unconfirmed() -> None:
    table = AdjacencyTable(Limits(per_interface=8, total=10))
    flood(table, "eth0", 8, now=0)
    table.heard("fe80::1", "eth1", IKE, 500, TTL, now=0)
    table.heard("fe80::2", "eth1", IKE, 500, TTL, now=0)
    out = table.heard("fe80::3", "eth2", IKE, 500, TTL, now=1)
    assert out == [AdjacencyDown(fake(1), "eth0"), AdjacencyUp("fe80::3", "eth2", IKE, 500)]
    assert len(table.entries) == 10


def test_a_node_full_of_confirmed_neighbours_refuses_newcomers_counted() -> None:
    table = AdjacencyTable(Limits(per_interface=4, total=2))
    for n in (1, 2):
        table.heard(fake(n), f"eth{n}", IKE, 500, TTL, now=0)
        table.confirm(fake(n), f"eth{n}")
    assert table.heard(fake(3), "eth3", IKE, 500, TTL, now=1) == []
    assert table.counters["table_full_drops"] == 1


def test_expiry_bookkeeping_stays_bounded_under_churn() -> None:
    table = AdjacencyTable(Limits(per_interface=64))
    for second in range(100):
        flood(table, "eth0", 500, now=second, start=second * 500)
        table.heard("fe80::1", "eth1", IKE, 500, TTL, now=second)  # refreshed every second
        table.expire(now=second)
    assert len(table._expiry) <= 2 * len(table.entries) + 64 + 1
    assert ("fe80::1", "eth1") in table.entries
    assert AdjacencyDown("fe80::1", "eth1") not in table.expire(now=99 + 209)
    assert AdjacencyDown("fe80::1", "eth1") in table.expire(now=99 + 210)


def test_a_shorter_ttl_brings_expiry_forward() -> None:
    table = AdjacencyTable()
    table.heard("fe80::1", "eth0", IKE, 500, TTL, now=0)
    table.heard("fe80::1", "eth0", IKE, 500, 5_000, now=1)
    assert table.next_expiry() == 6
    assert table.expire(now=6) == [AdjacencyDown("fe80::1", "eth0")]


@pytest.mark.parametrize("interval", [60.0, 2.0])
def test_limits_follow_the_flood_period(interval: float) -> None:
    lim = Limits.for_interval(interval)
    assert lim.default_ttl_s == lim.max_ttl_s == 3.5 * interval
    assert lim.confirm_span_s == 0.8 * interval  # met by the next periodic flood, jitter or not


def test_the_table_follows_the_core_contract() -> None:
    """next_timer()/handle_timer(now) are its expiry: early calls do nothing, late ones all
    that is due (docs/core-contract.md)."""
    table = AdjacencyTable()
    assert table.next_timer() is None and table.handle_timer(1000.0) == []
    table.heard("fe80::1", "eth0", IKE, 500, 5_000, now=0)
    table.heard("fe80::2", "eth0", IKE, 500, 8_000, now=1)
    assert table.next_timer() == 5
    assert table.handle_timer(4.9) == []
    assert table.handle_timer(20) == [AdjacencyDown("fe80::1", "eth0"),
                                      AdjacencyDown("fe80::2", "eth0")]
    assert table.next_timer() is None

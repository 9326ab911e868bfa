"""The adjacency table: new, refreshed, changed, expired, dropped with its link, bounded."""
from __future__ import annotations

from acp_openwrt.discovery import adjacency
from acp_openwrt.discovery.adjacency import AdjacencyTable
from acp_openwrt.events import AdjacencyDown, AdjacencyUp


def test_lifecycle() -> None:
    table = AdjacencyTable()
    assert table.heard("fe80::1", "eth0", ("IKEv2",), 500, 210, now=0) == [
        AdjacencyUp("fe80::1", "eth0", ("IKEv2",), 500)]
    assert table.heard("fe80::1", "eth0", ("IKEv2",), 500, 210, now=60) == []  # refresh only
    assert table.expire(now=269) == []
    assert table.next_expiry() == 270
    changed = table.heard("fe80::1", "eth0", ("IKEv2", "DTLS"), 500, 210, now=100)
    assert changed == [AdjacencyUp("fe80::1", "eth0", ("IKEv2", "DTLS"), 500)]
    table.heard("fe80::1", "eth1", ("IKEv2",), 500, 10, now=100)  # same peer, other link
    assert table.expire(now=111) == [AdjacencyDown("fe80::1", "eth1")]
    assert table.drop_interface("eth0") == [AdjacencyDown("fe80::1", "eth0")]
    assert table.entries == {}


def test_listing_carries_peer_interface_methods() -> None:
    table = AdjacencyTable()
    table.heard("fe80::2", "br-lan", ("IKEv2",), 500, 210, now=0)
    [entry] = table.to_list(now=10)
    assert entry["peer"] == "fe80::2" and entry["interface"] == "br-lan"
    assert entry["methods"] == ["IKEv2"] and entry["ttl_s"] == 200


def test_bounded(monkeypatch) -> None:
    monkeypatch.setattr(adjacency, "MAX_ENTRIES", 3)
    table = AdjacencyTable()
    for i in range(5):
        table.heard(f"fe80::{i + 1}", "eth0", ("IKEv2",), 500, 210, now=0)
    assert len(table.entries) == 3 and table.full_drops == 2

"""Channel building blocks without I/O: names, the connection, strongswan.conf, VICI parsing,
IKE identities and the peer certificate check."""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from acp_openwrt.channels.connection import (
    acp_ifname,
    conn_name,
    connection,
    dull_ifname,
    parse_conn_name,
)
from acp_openwrt.channels.ike_identity import (
    KIND_DN,
    KIND_IPV6,
    KIND_RFC822,
    identity_problem,
    local_identity,
)
from acp_openwrt.channels.peer_check import check_peer
from acp_openwrt.channels.strongswan_conf import CharonSettings, render
from acp_openwrt.channels.vici_driver import parse_event, pem_blocks
from acp_openwrt.identity.address import name_for_address, zone_address
from acp_openwrt.lab.pki import TestCA

DOMAIN = "acp.example.com"


def test_conn_names_round_trip() -> None:
    assert parse_conn_name(conn_name(256, "to-b-x")) == (256, "to-b-x")
    assert parse_conn_name("other") is None and parse_conn_name("acp-x-eth0") is None
    assert dull_ifname(0x100) == "acpx100"


def test_acp_ifname_fits_and_avoids_clashes() -> None:
    peer = ipaddress.IPv6Address("fd89:b714:f3db::1234:4")
    first = acp_ifname(peer, set())
    assert first == "acp_12340004"
    second = acp_ifname(peer, {first})
    assert second == "acp_12340004-1" and len(second) <= 15


def test_connection_follows_rfc8994() -> None:
    conn = connection("fe80::1", "fe80::2", 300, local_id="fd00::1", cert_pem=b"C",
                      anchor_pems=(b"A",))
    child = conn["children"]["acp"]
    assert conn["local_addrs"] == ["fe80::1"] and conn["remote_addrs"] == ["fe80::2"]
    assert conn["version"] == "2" and conn["mobike"] == "no" and conn["encap"] == "no"
    # RFC 8994's AES-GCM-16-256 with group 19 first; RFC 8247's MUST set accepted after it
    assert conn["proposals"][:2] == ["aes256gcm16-prfsha256-ecp256",
                                     "aes256gcm16-prfsha512-ecp256"]
    must = conn["proposals"][2].split("-")
    assert {"aes128", "aes256", "sha256", "prfsha256", "modp2048"} <= set(must)
    assert len(conn["proposals"]) == 3
    assert child["mode"] == "tunnel" and child["local_ts"] == child["remote_ts"] == ["::/0"]
    assert child["if_id_in"] == child["if_id_out"] == "300"
    assert all(p.startswith("aes256gcm16") for p in child["esp_proposals"])
    assert conn["local"]["id"] == "fd00::1" and conn["remote"]["cacerts"] == [b"A"]
    assert "id" not in connection("fe80::1", "fe80::2", 1, local_id=None, cert_pem=b"C",
                                  anchor_pems=())["local"]
    assert conn["unique"] == "no"   # no INITIAL_CONTACT on a first contact: both may start
    again = connection("fe80::1", "fe80::2", 1, local_id=None, cert_pem=b"C", anchor_pems=(),
                       initial_contact="fd00::2")
    assert again["unique"] == "replace" and again["remote"]["id"] == "fd00::2"
    assert conn["remote"]["id"] == "%any"


def test_strongswan_conf_has_what_mattered_in_the_lab() -> None:
    text = render(CharonSettings(vici_socket="/run/charon.vici", retransmit_tries=2))
    assert "kdf" in text.split("load =")[1].split("\n")[0]
    assert "set_sourceif = yes" in text and "install_routes = no" in text
    assert "socket = unix:///run/charon.vici" in text and "retransmit_tries = 2" in text
    assert text.count("{") == text.count("}")


def test_dead_peer_time_from_retransmissions() -> None:
    s = CharonSettings(vici_socket="/x", retransmit_timeout=1.0, retransmit_tries=2,
                       retransmit_base=2.0)
    assert s.dead_peer_seconds() == pytest.approx(1 + 2 + 4)


def test_parse_vici_events() -> None:
    sa = {b"uniqueid": b"3", b"state": b"ESTABLISHED", b"initiator": b"yes",
          b"remote-id": b"fd00::2", b"local-host": b"fe80::1", b"remote-host": b"fe80::2"}
    sa = {k.decode(): v for k, v in sa.items()}
    child = {"uniqueid": b"7", "state": b"INSTALLED", "bytes-in": b"10", "bytes-out": b"5"}
    (ike,) = parse_event("ike-updown", {"up": b"yes", "acp-256-eth0": sa})
    assert ike.kind == "ike" and ike.up and ike.sa.unique_id == "3" and ike.sa.initiator
    assert ike.sa.remote_id == "fd00::2" and ike.sa.conn == "acp-256-eth0"
    (ch,) = parse_event("child-updown", {"acp-256-eth0": dict(sa, **{"child-sas": {"acp-7":
                                                                                   child}})})
    assert ch.kind == "child" and not ch.up and ch.child.unique_id == "7"
    assert ch.child.bytes_in == 10
    (rk,) = parse_event("ike-rekey", {"c": {"old": {"uniqueid": b"3"}, "new": {"uniqueid": b"4"}}})
    assert (rk.old_id, rk.sa.unique_id) == ("3", "4")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("pki"), domain=DOMAIN)


def node(ca: TestCA, name: str, number: int, **kwargs: object):
    address = zone_address("", registrar_id=0x1234, node_number=number)
    return ca.issue_node(name, acp_node_name=name_for_address(address, ca.domain).format(),
                         **kwargs), address.address


def der(creds) -> bytes:
    return creds.certificate.public_bytes(Encoding.DER)


def test_local_identity_choices(ca: TestCA) -> None:
    with_ip, address = node(ca, "ip", 1, ip_address=zone_address("", 0x1234, 1).address)
    assert local_identity(with_ip.certificate).__dict__ == {"kind": KIND_IPV6,
                                                           "value": str(address)}
    name = name_for_address(zone_address("", 0x1234, 2), DOMAIN).format()
    legacy, _ = node(ca, "mail", 2, rfc822_name=name)
    assert local_identity(legacy.certificate).kind == KIND_RFC822
    plain, _ = node(ca, "dn", 3)
    assert local_identity(plain.certificate).kind == KIND_DN
    wrong_ip, _ = node(ca, "wrongip", 4, ip_address="fd00::99")
    assert local_identity(wrong_ip.certificate).kind == KIND_DN


def test_identity_must_be_the_acp_address() -> None:
    addr = ipaddress.IPv6Address("fd00::1")
    assert identity_problem("fd00::1", addr) is None
    assert "not the certificate's ACP address" in identity_problem("fd00::2", addr)
    assert identity_problem("x@acp.example.com", addr) is None


def test_peer_check_accepts_member_and_refuses_others(ca: TestCA, tmp_path: Path) -> None:
    peer, address = node(ca, "peer", 5, ip_address=zone_address("", 0x1234, 5).address)
    ok = check_peer(str(address), [der(peer)], [], [ca.certificate], DOMAIN)
    assert ok.ok and ok.address == address and ok.node_name.endswith("@" + DOMAIN)
    other = TestCA.create(tmp_path / "o", domain=DOMAIN)
    stranger, addr2 = node(other, "stranger", 6)
    bad = check_peer(str(addr2), [der(stranger)], [], [ca.certificate], DOMAIN)
    assert not bad.ok and "trusted anchor" in bad.reason
    assert not check_peer(str(address), [der(peer)], [], [ca.certificate], "other.example").ok
    liar = check_peer("fd00::77", [der(peer)], [], [ca.certificate], DOMAIN)
    assert not liar.ok and "not the certificate's ACP address" in liar.reason
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=800)
    assert not check_peer(str(address), [der(peer)], [], [ca.certificate], DOMAIN,
                          now=later).ok
    assert not check_peer(str(address), [], [], [ca.certificate], DOMAIN).ok


def test_pem_blocks_split_bundles(ca: TestCA) -> None:
    one, _ = node(ca, "p1", 7)
    two, _ = node(ca, "p2", 8)
    bundle = one.cert_path.read_bytes() + b"\n" + two.cert_path.read_bytes()
    assert [b.strip() for b in pem_blocks(bundle)] == [one.cert_path.read_bytes().strip(),
                                                      two.cert_path.read_bytes().strip()]

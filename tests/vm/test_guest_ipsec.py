"""The guest kernel carries IPsec: an ESP tunnel between two namespaces over xfrm interfaces.

Shaped like an ACP secure channel: link-local outer addresses on a veth, one xfrm interface per
side created with `dev <veth>`, static rfc4106(gcm(aes)) SAs, inner ULA /128 addresses. The test
pings across and checks the SAs' own packet counters, so a packet that bypassed ESP fails it.
"""
from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute, netns

from acp_openwrt.lab.channel_testbed import ping

IFA_F_NODAD = 0x02
IF_ID = 0x42




@dataclass(frozen=True)
class Side:
    ns: str
    outer: str  # link-local on the veth
    inner: str  # ULA /128 on the xfrm interface


@pytest.fixture
def two_namespaces(guest: None) -> Iterator[tuple[Side, Side]]:
    tag = secrets.token_hex(3)
    a = Side(f"acpvm-a-{tag}", "fe80::1", "fd00:acb::1")
    b = Side(f"acpvm-b-{tag}", "fe80::2", "fd00:acb::2")
    created = []
    try:
        for side in (a, b):
            netns.create(side.ns)
            created.append(side.ns)
        yield a, b
    finally:  # removing a namespace removes its links, SAs and policies with it
        for name in created:
            netns.remove(name)


def _xfrm(ns: str, *args: str) -> str:
    # pyroute2's xfrm support is too thin for SAs with AEAD and if_id; ip xfrm it is.
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


def _sa_counters(ns: str) -> dict[int, int]:
    """SPI -> packets, from `ip -s xfrm state`."""
    counters = {}
    for block in re.split(r"\n(?=src )", _xfrm(ns, "-s", "xfrm", "state")):
        spi = re.search(r"spi 0x([0-9a-f]+)", block)
        packets = re.search(r"lifetime current:\s*\n\s*\d+\(bytes\), (\d+)\(packets\)", block)
        if spi and packets:
            counters[int(spi.group(1), 16)] = int(packets.group(1))
    return counters


def _wire(local: Side, peer: Side, veth: str, key_out: str, key_in: str,
          spi_out: int, spi_in: int) -> None:
    with IPRoute(netns=local.ns) as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=lo, state="up")
        (link,) = ipr.link_lookup(ifname=veth)
        ipr.addr("add", index=link, address=local.outer, prefixlen=64, flags=IFA_F_NODAD)
        ipr.link("set", index=link, state="up")
        ipr.link("add", ifname="acp-peer", kind="xfrm", xfrm_link=link, xfrm_if_id=IF_ID)
        (xfrmi,) = ipr.link_lookup(ifname="acp-peer")
        ipr.addr("add", index=xfrmi, address=local.inner, prefixlen=128, flags=IFA_F_NODAD)
        ipr.link("set", index=xfrmi, state="up")
        ipr.route("add", dst=f"{peer.inner}/128", oif=xfrmi)
        # Outer ESP packets must leave on the veth, not loop into the xfrm interface (lab notes).
        ipr.route("add", dst=f"{peer.outer}/128", oif=link)
    aead = ("aead", "rfc4106(gcm(aes))")
    for src, dst, spi, key in ((local.outer, peer.outer, spi_out, key_out),
                               (peer.outer, local.outer, spi_in, key_in)):
        _xfrm(local.ns, "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp",
              "spi", hex(spi), "reqid", "1", "mode", "tunnel", *aead, "0x" + key, "128",
              "if_id", hex(IF_ID))
    for direction, src, dst in (("out", local.outer, peer.outer), ("in", peer.outer, local.outer)):
        _xfrm(local.ns, "xfrm", "policy", "add", "src", "::/0", "dst", "::/0", "dir", direction,
              "if_id", hex(IF_ID), "tmpl", "src", src, "dst", dst, "proto", "esp",
              "mode", "tunnel", "reqid", "1")




def test_esp_tunnel_over_xfrm_interfaces(two_namespaces: tuple[Side, Side]) -> None:
    a, b = two_namespaces
    with IPRoute(netns=a.ns) as ipr:
        ipr.link("add", ifname="veth-a", kind="veth", peer={"ifname": "veth-b", "net_ns_fd": b.ns})
    key_ab, key_ba = secrets.token_hex(36), secrets.token_hex(36)  # 256-bit key + 32-bit salt
    _wire(a, b, "veth-a", key_ab, key_ba, spi_out=0xA1, spi_in=0xB1)
    _wire(b, a, "veth-b", key_ba, key_ab, spi_out=0xB1, spi_in=0xA1)
    assert _sa_counters(a.ns) == {0xA1: 0, 0xB1: 0}

    assert ping(a.ns, a.inner, b.inner, timeout=10.0) == 3

    sent, received = _sa_counters(a.ns)[0xA1], _sa_counters(a.ns)[0xB1]
    assert sent >= 3, "echo requests did not go through the outbound ESP SA"
    assert received >= 3, "echo replies did not come back through the inbound ESP SA"
    assert _sa_counters(b.ns)[0xA1] >= 3


def test_guest_preloaded_ipsec_modules(guest: None) -> None:
    with open("/proc/modules") as f:
        loaded = {line.split()[0] for line in f}
    assert {"esp6", "xfrm_interface", "ip6_vti", "veth", "macvlan"} <= loaded

"""acp-node-name and ACP address worked examples from the digest (A.4, A.14)."""
from __future__ import annotations

import ipaddress

import pytest

from acp_openwrt.identity.address import (
    AcpAddress,
    AddressError,
    Scheme,
    address_from_name,
    manual_address,
    name_for_address,
    ula_prefix,
    vlong_address,
    zone_address,
)
from acp_openwrt.identity.node_name import NodeNameError, parse_acp_node_name

RFC_NAME = "fd89b714f3db00000200000064000000+area51.research@acp.example.com"


def test_rfc_example_name() -> None:
    name = parse_acp_node_name(RFC_NAME)
    assert name.acp_address == "fd89b714f3db00000200000064000000"
    assert name.rsub == "area51.research"
    assert name.domain == "acp.example.com"
    assert name.routing_subdomain == "area51.research.acp.example.com"
    assert name.format() == RFC_NAME
    addr = address_from_name(name)
    assert addr.address == ipaddress.IPv6Address("fd89:b714:f3db:0:200:0:6400:0")


def test_rfc_ula_hash() -> None:
    assert ula_prefix("area51.research.acp.example.com") == ipaddress.IPv6Network(
        "fd89:b714:f3db::/48")
    assert ula_prefix("acp.example.com") == ipaddress.IPv6Network("fd73:9fc2:3c34::/48")


def test_rfc_example_address_is_zone() -> None:
    addr = AcpAddress.decode("fd89:b714:f3db:0:200:0:6400:0")
    assert addr.scheme is Scheme.ZONE
    assert (addr.zone_id, addr.registrar_id, addr.node_number, addr.v) == (0, 0x020000006400, 0, 0)
    assert addr.prefix_length == 127


def test_vlong8_examples() -> None:
    addr = AcpAddress.decode("fd73:9fc2:3c34:4011:2233:4455:0:0")
    assert addr.scheme is Scheme.VLONG8
    assert (addr.registrar_id, addr.node_number, addr.v) == (0x1122334455, 0, 0)
    assert addr.prefix_length == 120
    three = AcpAddress.decode("fd73:9fc2:3c34:4011:2233:4455:0:300")
    assert (three.scheme, three.node_number) == (Scheme.VLONG8, 3)
    built = vlong_address("acp.example.com", 0x1122334455, 3)
    assert built.address == three.address


def test_vlong16_example() -> None:
    addr = vlong_address("acp.example.com", 0x1122334455, 3, v_bits=16)
    assert addr.prefix == ipaddress.IPv6Network("fd73:9fc2:3c34:4011:2233:4455:8003:0/112")
    assert addr.scheme is Scheme.VLONG16
    assert AcpAddress.decode(addr.address) == addr


def test_manual_example() -> None:
    addr = manual_address("acp.example.com", 1)
    assert addr.prefix == ipaddress.IPv6Network("fd73:9fc2:3c34:2001::/64")
    assert addr.scheme is Scheme.MANUAL and addr.subnet_id == 1


def test_zone_example() -> None:
    addr = zone_address("acp.example.com", 0x020000006400, 1)
    assert addr.address == ipaddress.IPv6Address("fd73:9fc2:3c34:0:200:0:6400:2")
    assert addr.prefix == ipaddress.IPv6Network("fd73:9fc2:3c34:0:200:0:6400:2/127")


def test_minerva_name_with_legacy_prefix() -> None:
    for prefix in ("rfc8994+", "rfcSELF+", "RFCself+"):
        name = parse_acp_node_name(prefix + "fd739fc23c3440112233445500000000+@acp.example.com")
        assert name.format() == "fd739fc23c3440112233445500000000+@acp.example.com"
        assert address_from_name(name).scheme is Scheme.VLONG8


def test_uppercase_hex_is_normalised() -> None:
    name = parse_acp_node_name("fd89b714F3db00000200000064000000+area51.research@acp.example.com")
    assert name.acp_address == "fd89b714f3db00000200000064000000"


@pytest.mark.parametrize("text,address,rsub,exts", [
    ("++ext@acp.example.com", None, "", ("ext",)),
    ("0@acp.example.com", "0", None, ()),
    ("0+rsub+a+b@acp.example.com", "0", "rsub", ("a", "b")),
    ("+@acp.example.com", None, "", ()),
])
def test_special_local_parts(text: str, address: str | None, rsub: str | None,
                             exts: tuple[str, ...]) -> None:
    name = parse_acp_node_name(text)
    assert (name.acp_address, name.rsub, name.extensions) == (address, rsub, exts)
    assert name.format() == text
    assert not name.has_address


def test_address_zero_may_build_channels_but_has_no_address() -> None:
    name = parse_acp_node_name("0@acp.example.com")
    assert name.can_build_channels
    with pytest.raises(AddressError):
        address_from_name(name)
    assert not parse_acp_node_name("+@acp.example.com").can_build_channels


@pytest.mark.parametrize("bad", [
    "", "no-at-sign", "a@b@c", "fd89@acp.example.com", "x" * 32 + "@acp.example.com",
    "fd89b714f3db00000200000064000000+bad_label!@acp.example.com",
    "fd89b714f3db00000200000064000000@", "fd89b714f3db00000200000064000000@-bad.example",
    "++ex t@acp.example.com", "+++@acp.example.com", "0@dom\u00e4in.example",
    "0@" + "a" * 2000, "0@a..b",
])
def test_bad_names(bad: str) -> None:
    with pytest.raises(NodeNameError):
        parse_acp_node_name(bad)


def test_name_for_address_round_trip() -> None:
    addr = zone_address("acp.example.com", 0x020000006400, 7)
    name = name_for_address(addr, "acp.example.com")
    assert address_from_name(parse_acp_node_name(name.format())) == addr


@pytest.mark.parametrize("bad", ["fe80::1", "not-an-address", "fd73:9fc2:3c34:8000::"])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(AddressError):
        AcpAddress.decode(bad)


def test_field_ranges_checked() -> None:
    with pytest.raises(AddressError):
        zone_address("acp.example.com", 1 << 48, 0)
    with pytest.raises(AddressError):
        vlong_address("acp.example.com", 1, 1 << 15, v_bits=16)
    with pytest.raises(AddressError):
        vlong_address("acp.example.com", 1, 1, v_bits=4)

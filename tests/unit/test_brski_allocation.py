"""The registrar's address allocator: persistent, never reusing a Node-Number, stable on renewal."""
from __future__ import annotations

import sqlite3

import pytest

from acp_openwrt.brski.registrar.allocation import AllocationError, Allocator
from acp_openwrt.identity.address import AcpAddress, Scheme, address_from_name, zone_address
from acp_openwrt.identity.node_name import parse_acp_node_name

DOMAIN = "acp.example.com"


def test_zone_zero_by_default_and_name_matches_address(tmp_path) -> None:
    alloc = Allocator(tmp_path / "a.db", domain=DOMAIN, registrar_id=0x020000006400)
    first = alloc.allocate("SN-1")
    assert first.new and first.address.scheme is Scheme.ZONE and first.address.zone_id == 0
    assert first.address == zone_address(DOMAIN, 0x020000006400, 1)
    assert str(first.address.address) == "fd73:9fc2:3c34:0:200:0:6400:2"
    assert address_from_name(parse_acp_node_name(first.acp_node_name)) == first.address
    assert first.acp_node_name == "fd739fc23c3400000200000064000002@acp.example.com"


def test_same_serial_same_address_across_restarts(tmp_path) -> None:
    path = tmp_path / "a.db"
    alloc = Allocator(path, domain=DOMAIN)
    one, two = alloc.allocate("SN-1"), alloc.allocate("SN-2")
    registrar_id = alloc.registrar_id
    alloc.close()
    again = Allocator(path, domain=DOMAIN)
    assert again.registrar_id == registrar_id
    repeat = again.allocate("SN-1")
    assert not repeat.new and repeat.address == one.address
    assert again.lookup_name(two.acp_node_name).serial == "SN-2"
    assert again.allocate("SN-3").address.node_number == 3


def test_forgotten_node_numbers_are_never_reused(tmp_path) -> None:
    path = tmp_path / "a.db"
    alloc = Allocator(path, domain=DOMAIN)
    first = alloc.allocate("SN-1")
    assert alloc.forget("SN-1")
    alloc.close()
    alloc = Allocator(path, domain=DOMAIN)
    second = alloc.allocate("SN-1")
    assert second.new and second.address.node_number == first.address.node_number + 1
    assert second.address != first.address


def test_vlong_spaces_are_separate(tmp_path) -> None:
    alloc = Allocator(tmp_path / "a.db", domain=DOMAIN, rsub="area51")
    z = alloc.allocate("z")
    v8 = alloc.allocate("v8", Scheme.VLONG8)
    v16 = alloc.allocate("v16", Scheme.VLONG16)
    assert (v8.address.scheme, v8.address.prefix_length) == (Scheme.VLONG8, 120)
    assert (v16.address.scheme, v16.address.prefix_length) == (Scheme.VLONG16, 112)
    assert z.address.node_number == v8.address.node_number == v16.address.node_number == 1
    assert v8.acp_node_name.endswith("+area51@acp.example.com")
    assert len({z.address.address, v8.address.address, v16.address.address}) == 3


def test_exhaustion_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "a.db"
    alloc = Allocator(path, domain=DOMAIN)
    alloc.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT OR REPLACE INTO counters VALUES ('zone', 32767)")
    alloc = Allocator(path, domain=DOMAIN)
    assert alloc.allocate("last").address.node_number == 32767
    with pytest.raises(AllocationError, match="exhausted"):
        alloc.allocate("one-too-many")


def test_database_is_bound_to_its_registrar_id_and_domain(tmp_path) -> None:
    path = tmp_path / "a.db"
    Allocator(path, domain=DOMAIN, registrar_id=5).close()
    with pytest.raises(AllocationError, match="Registrar-ID"):
        Allocator(path, domain=DOMAIN, registrar_id=6)
    with pytest.raises(AllocationError, match="belongs to"):
        Allocator(path, domain="other.example.com")


def test_database_file_is_private(tmp_path) -> None:
    Allocator(tmp_path / "a.db", domain=DOMAIN).close()
    assert (tmp_path / "a.db").stat().st_mode & 0o077 == 0


def test_addresses_decode_as_acp_addresses(tmp_path) -> None:
    alloc = Allocator(tmp_path / "a.db", domain=DOMAIN)
    for index in range(20):
        found = alloc.allocate(f"SN-{index}")
        assert AcpAddress.decode(found.address.address) == found.address

"""ACP addresses (RFC 8994 §6.11): the ULA prefix and the four sub-schemes.

Base scheme:  fd | hash40(routing-subdomain) | Type(2) | sub-scheme(78)
  Type 0, Z=0  Zone      Zone-ID(13)  | Registrar-ID(48) Node-Number(15) V(1)   -> /127
  Type 0, Z=1  Manual    Subnet-ID(13) | Interface Identifier(64)                -> /64
  Type 1, F=0  Vlong-8   Registrar-ID(46) F Node-Number(23) V(8)                 -> /120
  Type 1, F=1  Vlong-16  Registrar-ID(46) F Node-Number(15) V(16)                -> /112
Types 2 and 3 are reserved; decoding one is an error.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ..sha256 import sha256
from .node_name import AcpNodeName


class AddressError(ValueError):
    """A value that is not a valid ACP address or address component."""


class Scheme(enum.StrEnum):
    ZONE = "zone"
    MANUAL = "manual"
    VLONG8 = "vlong8"
    VLONG16 = "vlong16"


PREFIX_LENGTH = {Scheme.ZONE: 127, Scheme.MANUAL: 64, Scheme.VLONG8: 120, Scheme.VLONG16: 112}

_TYPE_SHIFT = 78
_SUB_MASK = (1 << 78) - 1


def ula_global_id(routing_subdomain: str) -> int:
    """First 40 bits of SHA-256 over the routing subdomain (§6.11.2)."""
    return int.from_bytes(sha256(routing_subdomain.encode("ascii")).digest()[:5], "big")


def ula_prefix(routing_subdomain: str) -> ipaddress.IPv6Network:
    """The /48 ULA prefix of a routing subdomain."""
    value = (0xFD << 40 | ula_global_id(routing_subdomain)) << 80
    return ipaddress.IPv6Network((value, 48))


def _check_range(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise AddressError(f"{name} {value!r} does not fit in {bits} bits")


@dataclass(frozen=True)
class AcpAddress:
    """A decoded ACP address. Fields not used by the scheme are None."""

    address: ipaddress.IPv6Address
    scheme: Scheme
    zone_id: int | None = None
    subnet_id: int | None = None
    registrar_id: int | None = None
    node_number: int | None = None
    v: int | None = None
    interface_id: int | None = None

    @property
    def prefix_length(self) -> int:
        return PREFIX_LENGTH[self.scheme]

    @property
    def prefix(self) -> ipaddress.IPv6Network:
        """The node's ACP prefix; the RPL DAO target (§6.12.1.11)."""
        return ipaddress.IPv6Network((self.address, self.prefix_length), strict=False)

    @property
    def ula_prefix(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network((self.address, 48), strict=False)

    @classmethod
    def decode(cls, address: ipaddress.IPv6Address | str) -> AcpAddress:
        """Split an address into its sub-scheme fields; only fd00::/8 with type 0 or 1."""
        try:
            addr = ipaddress.IPv6Address(address)
        except ValueError as exc:
            raise AddressError(f"{address!r} is not an IPv6 address") from exc
        value = int(addr)
        if value >> 120 != 0xFD:
            raise AddressError(f"{addr} is not in fd00::/8 (ACP addresses are ULA with L=1)")
        addr_type = (value >> _TYPE_SHIFT) & 0x3
        sub = value & _SUB_MASK
        if addr_type == 0:
            z = sub >> 77
            field13 = (sub >> 64) & 0x1FFF
            low64 = sub & ((1 << 64) - 1)
            if z:
                return cls(addr, Scheme.MANUAL, subnet_id=field13, interface_id=low64)
            return cls(addr, Scheme.ZONE, zone_id=field13, registrar_id=low64 >> 16,
                       node_number=(low64 >> 1) & 0x7FFF, v=low64 & 1)
        if addr_type == 1:
            registrar_id = (sub >> 32) & ((1 << 46) - 1)
            if (sub >> 31) & 1:
                return cls(addr, Scheme.VLONG16, registrar_id=registrar_id,
                           node_number=(sub >> 16) & 0x7FFF, v=sub & 0xFFFF)
            return cls(addr, Scheme.VLONG8, registrar_id=registrar_id,
                       node_number=(sub >> 8) & 0x7FFFFF, v=sub & 0xFF)
        raise AddressError(f"{addr} uses reserved ACP address type {addr_type}")


def _build(routing_subdomain: str, addr_type: int, sub: int) -> ipaddress.IPv6Address:
    base = int(ula_prefix(routing_subdomain).network_address)
    return ipaddress.IPv6Address(base | addr_type << _TYPE_SHIFT | sub)


def zone_address(routing_subdomain: str, registrar_id: int, node_number: int,
                 zone_id: int = 0, v: int = 0) -> AcpAddress:
    """ACP-Zone address (Zone-ID 0 is the RFC's recommendation)."""
    _check_range("Zone-ID", zone_id, 13)
    _check_range("Registrar-ID", registrar_id, 48)
    _check_range("Node-Number", node_number, 15)
    _check_range("V", v, 1)
    sub = zone_id << 64 | registrar_id << 16 | node_number << 1 | v
    return AcpAddress.decode(_build(routing_subdomain, 0, sub))


def manual_address(routing_subdomain: str, subnet_id: int, interface_id: int = 0) -> AcpAddress:
    """ACP-Manual address (for ACP connect subnets, not for certificates)."""
    _check_range("Subnet-ID", subnet_id, 13)
    _check_range("Interface Identifier", interface_id, 64)
    return AcpAddress.decode(_build(routing_subdomain, 0, 1 << 77 | subnet_id << 64 | interface_id))


def vlong_address(routing_subdomain: str, registrar_id: int, node_number: int,
                  v_bits: int = 8, v: int = 0) -> AcpAddress:
    """ACP-Vlong-8 (v_bits=8, /120) or ACP-Vlong-16 (v_bits=16, /112) address."""
    _check_range("Registrar-ID", registrar_id, 46)
    if v_bits == 8:
        _check_range("Node-Number", node_number, 23)
        _check_range("V", v, 8)
        sub = registrar_id << 32 | node_number << 8 | v
    elif v_bits == 16:
        _check_range("Node-Number", node_number, 15)
        _check_range("V", v, 16)
        sub = registrar_id << 32 | 1 << 31 | node_number << 16 | v
    else:
        raise AddressError(f"V field is 8 or 16 bits, not {v_bits}")
    return AcpAddress.decode(_build(routing_subdomain, 1, sub))


def address_from_name(name: AcpNodeName) -> AcpAddress:
    """The ACP address a certificate's acp-node-name assigns (the first address of its prefix)."""
    if not name.has_address:
        raise AddressError(f"acp-node-name {name} carries no ACP address")
    assert name.acp_address is not None
    return AcpAddress.decode(ipaddress.IPv6Address(int(name.acp_address, 16)))


def name_for_address(address: AcpAddress, domain: str, rsub: str | None = "",
                     extensions: tuple[str, ...] = ()) -> AcpNodeName:
    """The acp-node-name a registrar puts in a certificate for this address."""
    return AcpNodeName(f"{int(address.address):032x}", rsub, extensions, domain)

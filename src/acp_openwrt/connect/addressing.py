"""Which subnet an ACP connect interface gets, and which of its addresses the node uses.

Pure. Three ways to the subnet, in order (RFC 8994 §8.1.1, §8.1.3, §6.11.4):
- `option prefix`: the operator's /64, used as given (a warning if it is not an ACP-Manual
  prefix of the node's own ULA /48: the RFC says SHOULD use the Manual sub-scheme).
- `option subnet_id N`: the ACP-Manual /64 built from the node's own ACP address: its 48-bit
  ULA prefix, Type 0, Z=1, Subnet-ID N ("the operator configures only the Subnet-ID and the node
  assigns the remaining part", §8.1.1).
- neither: carved out of the node's own Vlong range, which §8.1.3 allows ("MAY allocate a subset
  of their /112 or /120"): Vlong-16 nodes give the k-th connect the /120 counted from the top of
  their /112 (V = 0xff00, 0xfe00, ...), Vlong-8 nodes the /124 from the top of their /120
  (V = 0xf0, 0xe0, ...). The node's own address (V = 0) stays in the lowest block. Such a subnet
  is inside the node's RPL prefix, so it needs no DAO target of its own; it is not a /64, so
  devices there cannot use SLAAC (the RA marks it on-link only). Zone (/127) and Manual nodes have
  nothing to carve: they need option prefix or subnet_id.

Addresses inside the subnet: the node's router address is the first after the Subnet-Router
anycast address (`<subnet>::1`); the relay address (IPv4 relays listen there) is the subnet's
last address, on the ACP loopback as /128. Both lie in a prefix that routes to this node.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..identity.address import AcpAddress, AddressError, Scheme
from .config import ConnectConfig

_Z_BIT = 1 << 77
CARVE = {Scheme.VLONG16: (120, 255), Scheme.VLONG8: (124, 15)}  # subnet length, slots


@dataclass(frozen=True)
class ConnectSubnet:
    """The subnet of one connect interface and how it was chosen."""
    network: ipaddress.IPv6Network
    source: str          # "prefix", "subnet_id" or "carved"
    dao_target: bool     # announce into RPL (False when inside the node's own prefix)

    @property
    def router(self) -> ipaddress.IPv6Address:
        return self.network.network_address + 1

    @property
    def relay(self) -> ipaddress.IPv6Address:
        return self.network.broadcast_address

    @property
    def slaac(self) -> bool:
        return self.network.prefixlen == 64


def manual_prefix(acp_address: ipaddress.IPv6Address | str,
                  subnet_id: int) -> ipaddress.IPv6Network:
    """The ACP-Manual /64 with this Subnet-ID in the ULA /48 of `acp_address` (§6.11.4)."""
    if not 0 <= subnet_id < 1 << 13:
        raise AddressError(f"Subnet-ID {subnet_id} does not fit in 13 bits")
    base = int(ipaddress.IPv6Address(acp_address)) >> 80 << 80
    return ipaddress.IPv6Network((base | _Z_BIT | subnet_id << 64, 64))


def carved_subnet(acp_address: ipaddress.IPv6Address | str, slot: int) -> ipaddress.IPv6Network:
    """The `slot`-th (0-based) connect subnet carved from the top of a Vlong node's range."""
    acp = AcpAddress.decode(acp_address)
    carve = CARVE.get(acp.scheme)
    if carve is None:
        raise AddressError(f"an {acp.scheme.value} ACP address ({acp.address}) has no range to "
                           "carve a connect subnet from: set option prefix or option subnet_id")
    length, slots = carve
    if not 0 <= slot < slots:
        raise AddressError(f"{acp.prefix} holds {slots} carved connect subnets; connect number "
                           f"{slot + 1} needs option prefix or option subnet_id")
    size = 1 << (128 - length)
    top = int(acp.prefix.network_address) + (slots - slot) * size
    return ipaddress.IPv6Network((top, length))


def connect_subnet(connect: ConnectConfig, acp_address: ipaddress.IPv6Address | str,
                   carve_slot: int = 0) -> ConnectSubnet:
    """The subnet for `connect` on a node with this ACP address; AddressError if none."""
    if connect.prefix is not None:
        return ConnectSubnet(connect.prefix, "prefix", True)
    if connect.subnet_id is not None:
        return ConnectSubnet(manual_prefix(acp_address, connect.subnet_id), "subnet_id", True)
    return ConnectSubnet(carved_subnet(acp_address, carve_slot), "carved", False)


def plan_subnets(connects: list[ConnectConfig], acp_address: ipaddress.IPv6Address | str
                 ) -> dict[str, ConnectSubnet | AddressError]:
    """Subnets for all connects (carve slots in config order); overlaps are errors."""
    out: dict[str, ConnectSubnet | AddressError] = {}
    slot = 0
    own = AcpAddress.decode(acp_address).prefix
    for connect in connects:
        try:
            subnet = connect_subnet(connect, acp_address, slot)
        except AddressError as exc:
            out[connect.name] = exc
            continue
        if subnet.source == "carved":
            slot += 1
        elif subnet.network.overlaps(own):
            out[connect.name] = AddressError(f"{subnet.network} overlaps the node's own ACP "
                                             f"prefix {own}")
            continue
        clash = next((name for name, s in out.items() if isinstance(s, ConnectSubnet)
                      and s.network.overlaps(subnet.network)), None)
        if clash is not None:
            out[connect.name] = AddressError(f"{subnet.network} overlaps connect '{clash}'")
            continue
        out[connect.name] = subnet
    return out


def manual_warning(subnet: ipaddress.IPv6Network, acp_address: ipaddress.IPv6Address | str
                   ) -> str | None:
    """Why a configured prefix is not what §8.1.1 recommends; None if it is."""
    ula = ipaddress.IPv6Network((ipaddress.IPv6Address(acp_address), 48), strict=False)
    if not subnet.subnet_of(ula):
        return f"{subnet} is outside the node's ACP prefix {ula}: NMS hosts need static routes"
    if not int(subnet.network_address) & _Z_BIT or (int(subnet.network_address) >> 78) & 3:
        return f"{subnet} is not an ACP-Manual prefix (Type 0, Z=1) of {ula}"
    return None

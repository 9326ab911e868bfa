"""Events of the ACP connect part, on the node's EventBus (acp_openwrt.events style).

RplPart listens: a subnet with `dao_target` becomes an extra DAO target (RFC 8994 §8.1.1:
the prefix of an ACP connect subnet MUST be distributed into RPL), and goes again when down.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectSubnetUp:
    """A connect interface is in the ACP namespace, addressed, and advertising its subnet."""
    name: str          # the UCI section name
    ifname: str        # the interface in the ACP namespace
    prefix: str        # the connect subnet, e.g. fd89:b714:f3db:2001::/64
    dao_target: bool   # False when the subnet lies inside the node's own RPL prefix


@dataclass(frozen=True)
class ConnectSubnetDown:
    name: str
    ifname: str
    prefix: str

"""What the join proxy tells acpd's DULL flooder: where AN_Proxy should (no longer) be flooded.

Kept apart from proxy_launcher so the flooder can import these without the launcher's imports.
The flooder sends ["AN_Proxy", 4, 1, ""] with [O_IPv6_LOCATOR, address, IPPROTO_TCP, port]
on `dull_ifname` (RFC 8995 §4.1.1, ttl 180000 ms) from AnProxyStart until AnProxyStop.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnProxyStart:
    """AN_Proxy should be flooded on this DULL interface, locator [address]:port over TCP."""
    dull_ifname: str
    address: str
    port: int


@dataclass(frozen=True)
class AnProxyStop:
    """Stop flooding AN_Proxy on this DULL interface (registrar lost, proxy down, link gone)."""
    dull_ifname: str

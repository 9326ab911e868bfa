"""Which registrars the join proxy can relay to: AN_join_registrar floods with their ttl (sans-I/O).

Both sides keep one: the proxy to choose where a pledge's circuit goes, acpd to re-feed a
restarted proxy with what it heard (remaining ttl). Time is passed in, never read here.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

AN_JOIN_REGISTRAR = "AN_join_registrar"
EST_TLS = "EST-TLS"
IPPROTO_TCP = 6
O_IPv6_LOCATOR = 103
MAX_REGISTRARS = 16  # a flood storm must not grow the table without bound


@dataclass(frozen=True, order=True)
class RegistrarLocator:
    """A registrar's ACP address and TCP port (from the flood's O_IPv6_LOCATOR)."""
    address: str
    port: int

    @classmethod
    def checked(cls, address: str, port: int) -> RegistrarLocator:
        """Normalised; ValueError (one line) for what a proxy must never connect to."""
        try:
            ip = ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(f"registrar address {address!r} is not an IPv6 address") from None
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_loopback:
            raise ValueError(f"registrar address {ip} is not a routable ACP address")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"registrar port {port!r} is not 1..65535")
        return cls(str(ip), port)

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port}


def registrar_from_flood(name: str, value: Any, locator: Any) -> RegistrarLocator | None:
    """The registrar a received flood announces, or None if it is not a usable one.

    `locator` is a GRASP Locator (kind, address bytes, protocol, port). Only TCP (the circuit
    proxy, RFC 8995 §4.3) to an IPv6 locator whose protocol list names EST-TLS is usable.
    """
    if name != AN_JOIN_REGISTRAR or locator is None:
        return None
    protocols = value if isinstance(value, (list, tuple)) else [value]
    if EST_TLS not in protocols:
        return None
    kind, address, protocol, port = locator[0], locator[1], locator[2], locator[3]
    if kind != O_IPv6_LOCATOR or protocol != IPPROTO_TCP or not isinstance(address, bytes):
        return None
    try:
        return RegistrarLocator.checked(str(ipaddress.IPv6Address(address)), port)
    except ValueError:
        return None


class RegistrarTable:
    """Registrars heard and when each expires; keeps the current choice while it lives."""

    def __init__(self) -> None:
        self._expires: dict[RegistrarLocator, float] = {}
        self._current: RegistrarLocator | None = None

    def heard(self, locator: RegistrarLocator, ttl_ms: int, now: float) -> None:
        """A flood (ttl_ms > 0) refreshes the entry; ttl_ms 0 withdraws it."""
        if ttl_ms <= 0:
            self._expires.pop(locator, None)
            return
        if locator not in self._expires and len(self._expires) >= MAX_REGISTRARS:
            oldest = min(self._expires, key=self._expires.__getitem__)
            del self._expires[oldest]
        self._expires[locator] = max(self._expires.get(locator, 0.0), now + ttl_ms / 1000.0)

    def expire(self, now: float) -> None:
        for locator, expires in list(self._expires.items()):
            if expires <= now:
                del self._expires[locator]

    def candidates(self, now: float) -> list[RegistrarLocator]:
        """Live registrars, the current choice first (stable: no flapping between equals)."""
        self.expire(now)
        if self._current not in self._expires:
            self._current = min(self._expires) if self._expires else None
        rest = sorted(loc for loc in self._expires if loc != self._current)
        return ([self._current] if self._current else []) + rest

    def current(self, now: float) -> RegistrarLocator | None:
        found = self.candidates(now)
        return found[0] if found else None

    def next_expiry(self) -> float | None:
        return min(self._expires.values()) if self._expires else None

    def remaining(self, now: float) -> list[tuple[RegistrarLocator, int]]:
        """Each live registrar with its remaining ttl in ms (to re-feed a restarted proxy)."""
        self.expire(now)
        return [(loc, max(1, int((exp - now) * 1000)))
                for loc, exp in sorted(self._expires.items())]

    def status(self, now: float) -> list[dict[str, Any]]:
        return [{**loc.to_dict(), "expires_in": round(ms / 1000.0, 1)}
                for loc, ms in self.remaining(now)]

"""Which registrars the join proxy can relay to: AN_join_registrar floods with their ttl (sans-I/O).

Both sides keep one: the proxy to choose where a pledge's circuit goes, acpd to re-feed a
restarted proxy with what it heard (remaining ttl). Time is passed in, never read here.
"""
from __future__ import annotations

import _socket

TYPE_CHECKING = False  # typing itself is no lightweight import
if TYPE_CHECKING:
    from typing import Any

AN_JOIN_REGISTRAR = "AN_join_registrar"
EST_TLS = "EST-TLS"
IPPROTO_TCP = 6
O_IPv6_LOCATOR = 103
MAX_REGISTRARS = 16  # a flood storm must not grow the table without bound
SUSPECT_FOR = 60.0   # s a registrar whose connect failed is tried after the others


def ipv6_packed(text: str) -> bytes:
    """The 16 bytes of a textual IPv6 address; ValueError if it is not one."""
    try:
        return _socket.inet_pton(_socket.AF_INET6, text)
    except (OSError, TypeError, ValueError):
        raise ValueError(f"{text!r} is not an IPv6 address") from None


def ipv6_text(packed: bytes) -> str:
    """The canonical text of 16 address bytes, as ipaddress.IPv6Address writes it (RFC 5952:
    lower case, the longest run of two or more zero groups, the first of equals, as ::), without
    importing ipaddress (the join proxy process keeps to C modules)."""
    groups = [int.from_bytes(packed[i:i + 2], "big") for i in range(0, 16, 2)]
    best, best_len, start = -1, 0, -1
    for i, group in enumerate([*groups, 1]):
        if group == 0 and start < 0:
            start = i
        elif group != 0 and start >= 0:
            if i - start > best_len:
                best, best_len = start, i - start
            start = -1
    words = [f"{g:x}" for g in groups]
    if best_len < 2:
        return ":".join(words)
    return ":".join(words[:best]) + "::" + ":".join(words[best + best_len:])


def ipv6_normal(text: str) -> str:
    return ipv6_text(ipv6_packed(text))


def _unusable(packed: bytes) -> bool:
    """Link-local (fe80::/10), multicast, unspecified or loopback."""
    return (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80 or packed[0] == 0xFF
            or packed[:15] == bytes(15) and packed[15] in (0, 1))


class RegistrarLocator:
    """A registrar's ACP address and TCP port (from the flood's O_IPv6_LOCATOR); immutable,
    ordered by (address, port)."""
    __slots__ = ("address", "port")
    address: str
    port: int

    def __init__(self, address: str, port: int) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "port", port)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RegistrarLocator is immutable ({name})")

    def _key(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegistrarLocator) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: RegistrarLocator) -> bool:
        return self._key() < other._key()

    def __repr__(self) -> str:
        return f"RegistrarLocator(address={self.address!r}, port={self.port!r})"

    @classmethod
    def checked(cls, address: str, port: int) -> RegistrarLocator:
        """Normalised; ValueError (one line) for what a proxy must never connect to."""
        try:
            packed = ipv6_packed(address)
        except ValueError:
            raise ValueError(f"registrar address {address!r} is not an IPv6 address") from None
        if _unusable(packed):
            raise ValueError(f"registrar address {ipv6_text(packed)} is not a routable ACP address")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"registrar port {port!r} is not 1..65535")
        return cls(ipv6_text(packed), port)

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
    if (kind != O_IPv6_LOCATOR or protocol != IPPROTO_TCP or not isinstance(address, bytes)
            or len(address) != 16):
        return None
    try:
        return RegistrarLocator.checked(ipv6_text(address), port)
    except ValueError:
        return None


class RegistrarTable:
    """Registrars heard and when each expires; keeps the current choice while it lives.

    More than one registrar (RFC 8994 §6.11.7): the registrar on this very node (`local`) is
    preferred, and one whose connect failed (`failed`) is tried after the others for
    SUSPECT_FOR seconds, so circuits go to a registrar that answers instead of waiting for a
    dead one's flood to expire (up to its ttl, 180 s)."""

    def __init__(self) -> None:
        self._expires: dict[RegistrarLocator, float] = {}
        self._current: RegistrarLocator | None = None
        self._local: set[RegistrarLocator] = set()
        self._suspect: dict[RegistrarLocator, float] = {}  # tried last until then

    def heard(self, locator: RegistrarLocator, ttl_ms: int, now: float,
              local: bool = False) -> None:
        """A flood (ttl_ms > 0) refreshes the entry; ttl_ms 0 withdraws it."""
        if ttl_ms <= 0:
            self._forget(locator)
            return
        if locator not in self._expires and len(self._expires) >= MAX_REGISTRARS:
            self._forget(min(self._expires, key=self._expires.__getitem__))
        self._expires[locator] = max(self._expires.get(locator, 0.0), now + ttl_ms / 1000.0)
        if local:
            self._local.add(locator)

    def _forget(self, locator: RegistrarLocator) -> None:
        self._expires.pop(locator, None)
        self._suspect.pop(locator, None)
        self._local.discard(locator)

    def failed(self, locator: RegistrarLocator, now: float) -> bool:
        """A connect to it failed: try it after the others for SUSPECT_FOR seconds. True when
        that changed the current choice."""
        if locator not in self._expires:
            return False
        before = self.current(now)
        self._suspect[locator] = now + SUSPECT_FOR
        return self.current(now) != before

    def answered(self, locator: RegistrarLocator, now: float) -> bool:
        """A connect to it succeeded: no longer suspect. True when that changed the current
        choice (it was the only one left that had not failed)."""
        if self._suspect.pop(locator, None) is None:
            return False
        before = self._current
        return self.current(now) != before

    def expire(self, now: float) -> None:
        for locator, expires in list(self._expires.items()):
            if expires <= now:
                self._forget(locator)
        for locator, until in list(self._suspect.items()):
            if until <= now:
                del self._suspect[locator]

    def _rank(self, locator: RegistrarLocator) -> tuple[bool, bool, float, RegistrarLocator]:
        """Answering before suspect (the one that failed longest ago first), local before
        remote. A suspect current choice yields to the best; any other only to a better class
        (a local registrar)."""
        return (locator in self._suspect, locator not in self._local,
                self._suspect.get(locator, 0.0), locator)

    def candidates(self, now: float) -> list[RegistrarLocator]:
        """Live registrars, the current choice first (stable: no flapping between equals)."""
        self.expire(now)
        best = min(self._expires, key=self._rank) if self._expires else None
        current = self._current
        if current is None or current not in self._expires or current in self._suspect or (
                best is not None and self._rank(best)[:2] < self._rank(current)[:2]):
            self._current = current = best
        rest = sorted((loc for loc in self._expires if loc != current), key=self._rank)
        return ([current] if current else []) + rest

    def current(self, now: float) -> RegistrarLocator | None:
        found = self.candidates(now)
        return found[0] if found else None

    def next_expiry(self) -> float | None:
        times = [*self._expires.values(), *self._suspect.values()]
        return min(times) if times else None

    def remaining(self, now: float) -> list[tuple[RegistrarLocator, int]]:
        """Each live registrar with its remaining ttl in ms (to re-feed a restarted proxy)."""
        self.expire(now)
        return [(loc, max(1, int((exp - now) * 1000)))
                for loc, exp in sorted(self._expires.items())]

    def is_local(self, locator: RegistrarLocator) -> bool:
        return locator in self._local

    def status(self, now: float) -> list[dict[str, Any]]:
        return [{**loc.to_dict(), "expires_in": round(ms / 1000.0, 1),
                 "local": loc in self._local,
                 "suspect_for": round(self._suspect[loc] - now, 1) if loc in self._suspect
                 else None}
                for loc, ms in self.remaining(now)]

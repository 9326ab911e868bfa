"""The route plan: the routes RPL wants in the ACP namespace, as data, and the diff between plans.

The installer (pyroute2) applies a RouteDiff; the engine only ever says what it wants.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

DEFAULT_PREFIX = ipaddress.IPv6Network("::/0")


class RouteKind(enum.StrEnum):
    UNICAST = "unicast"          # via a neighbour's link-local address on an interface
    BLACKHOLE = "blackhole"      # the unused part of the node's own prefix (RFC 8994 §6.12.1.11)


@dataclass(frozen=True, order=True)
class Route:
    prefix: ipaddress.IPv6Network
    kind: RouteKind = RouteKind.UNICAST
    gateway: ipaddress.IPv6Address | None = None
    ifname: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"prefix": str(self.prefix), "kind": self.kind.value,
                "gateway": str(self.gateway) if self.gateway is not None else None,
                "ifname": self.ifname}


@dataclass(frozen=True)
class RouteDiff:
    add: tuple[Route, ...]
    remove: tuple[Route, ...]

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def diff(old: frozenset[Route] | set[Route], new: frozenset[Route] | set[Route]) -> RouteDiff:
    """Routes to add and to remove to get from old to new (a changed next hop is remove + add).

    Removals whose prefix is re-added are listed too: an installer that replaces in place can skip
    them, one that does not must remove first.
    """
    return RouteDiff(tuple(sorted(set(new) - set(old), key=_key)),
                     tuple(sorted(set(old) - set(new), key=_key)))


def _key(route: Route) -> tuple[int, int, str, int, str]:
    return (route.prefix.prefixlen, int(route.prefix.network_address), route.kind.value,
            int(route.gateway) if route.gateway is not None else -1, route.ifname or "")


def lookup(routes: frozenset[Route] | set[Route],
           destination: ipaddress.IPv6Address) -> Route | None:
    """Longest-prefix match, as the kernel would choose (used by tests and diagnostics)."""
    best: Route | None = None
    for route in routes:
        if destination in route.prefix and (best is None
                                            or route.prefix.prefixlen > best.prefix.prefixlen):
            best = route
    return best

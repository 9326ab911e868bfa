"""Storing-mode downward state (RFC 6550 §9): targets learned from children's DAOs, with expiry.

A target may be announced by several children (nodes send DAOs to all their parents); the route
uses the entry with the newest Path Sequence, then the most recently refreshed one.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from . import sequence
from .constants import MIN_TARGET_PREFIX_LENGTH, NO_PATH_LIFETIME
from .messages import Dao

NeighborKey = tuple[str, ipaddress.IPv6Address]  # (interface, link-local address)


@dataclass
class DownwardEntry:
    path_sequence: int
    path_lifetime: int         # as received, in Lifetime Units (0xFF: infinite); passed upward
    expires: float | None      # None: infinite
    updated: float


class DownwardTable:
    """target prefix -> child -> entry."""

    def __init__(self) -> None:
        self._entries: dict[ipaddress.IPv6Network, dict[NeighborKey, DownwardEntry]] = {}
        # Bumped by every change to the entries (a refresh too: best() prefers the most
        # recently refreshed child), so that a route plan built from them can be cached.
        self.version = 0

    def update(self, child: NeighborKey, target: ipaddress.IPv6Network, path_sequence: int,
               path_lifetime: int, lifetime_seconds: float | None, now: float) -> bool:
        """Apply one DAO target; lifetime 0 is a No-Path. True when something changed."""
        per_child = self._entries.get(target, {})
        old = per_child.get(child)
        if old is not None and sequence.compare(path_sequence, old.path_sequence) == -1:
            return False  # older information than we hold (§9.2.2)
        if path_lifetime == 0:
            if old is None:
                return False
            del per_child[child]
            if not per_child:
                del self._entries[target]
            self.version += 1
            return True
        expires = None if lifetime_seconds is None else now + lifetime_seconds
        self.version += 1
        self._entries.setdefault(target, {})[child] = DownwardEntry(
            path_sequence, path_lifetime, expires, now)
        return old is None or old.path_sequence != path_sequence \
            or old.path_lifetime != path_lifetime

    def get(self, child: NeighborKey, target: ipaddress.IPv6Network) -> DownwardEntry | None:
        return self._entries.get(target, {}).get(child)

    def remove_where(self, predicate: Callable[[NeighborKey], bool]) -> bool:
        """Drop entries whose child matches predicate(child); True when any went."""
        changed = False
        for target in list(self._entries):
            per_child = self._entries[target]
            for child in [k for k in per_child if predicate(k)]:
                del per_child[child]
                changed = True
            if not per_child:
                del self._entries[target]
        if changed:
            self.version += 1
        return changed

    def remove_child(self, child: NeighborKey) -> bool:
        return self.remove_where(lambda k: k == child)

    def remove_interface(self, ifname: str) -> bool:
        return self.remove_where(lambda k: k[0] == ifname)

    def expire(self, now: float) -> bool:
        changed = False
        for target in list(self._entries):
            per_child = self._entries[target]
            for child, entry in list(per_child.items()):
                if entry.expires is not None and entry.expires <= now:
                    del per_child[child]
                    changed = True
            if not per_child:
                del self._entries[target]
        if changed:
            self.version += 1
        return changed

    def next_expiry(self) -> float | None:
        times = [e.expires for per in self._entries.values() for e in per.values()
                 if e.expires is not None]
        return min(times) if times else None

    def best(self) -> dict[ipaddress.IPv6Network, tuple[NeighborKey, DownwardEntry]]:
        result: dict[ipaddress.IPv6Network, tuple[NeighborKey, DownwardEntry]] = {}
        for target, per_child in self._entries.items():
            chosen: tuple[NeighborKey, DownwardEntry] | None = None
            for child, entry in per_child.items():
                if chosen is None:
                    chosen = (child, entry)
                    continue
                order = sequence.compare(entry.path_sequence, chosen[1].path_sequence)
                if order == 1 or (order == 0 and entry.updated > chosen[1].updated):
                    chosen = (child, entry)
            if chosen is not None:
                result[target] = chosen
        return result

    def children(self) -> dict[NeighborKey, list[ipaddress.IPv6Network]]:
        result: dict[NeighborKey, list[ipaddress.IPv6Network]] = {}
        for target, per_child in self._entries.items():
            for child in per_child:
                result.setdefault(child, []).append(target)
        return result

    def __len__(self) -> int:
        return len(self._entries)


def acceptable_target(prefix: ipaddress.IPv6Network, own: ipaddress.IPv6Network) -> bool:
    """A DAO target a child may announce: not ours, not link-local/multicast, not too short."""
    address = prefix.network_address
    return (prefix.prefixlen >= MIN_TARGET_PREFIX_LENGTH and not prefix.overlaps(own)
            and not (address.is_link_local or address.is_multicast or address.is_loopback
                     or address.is_unspecified))


@dataclass(frozen=True)
class TargetUpdate:
    """One Target of a child's DAO, as it will be applied."""
    prefix: ipaddress.IPv6Network
    path_sequence: int | None   # None: the DAO had no Transit Information for it
    path_lifetime: int          # in Lifetime Units; 0 is a No-Path


def read_dao(dao: Dao, default_lifetime: int, acceptable: Callable[[ipaddress.IPv6Network], bool],
             without_transit: bool) -> tuple[list[TargetUpdate], str | None]:
    """A child's DAO as updates, or the reason it cannot be honoured (a counter name).

    All or nothing: when one Target cannot be routed here nothing is applied, so that a DAO-ACK
    with status 0 always means every Target of the DAO has its route. A No-Path can always be
    honoured (there is nothing to route). Targets without a Transit get the DODAG's Default
    Lifetime ("the lifetime that is used as default for all RPL routes", RFC 6550 §6.7.6).
    """
    groups = dao.groups()
    if not groups:
        return [], "dao_without_target"  # §9.4 rule 1: one or more Targets, MUST
    updates: list[TargetUpdate] = []
    for targets, transits in groups:
        if transits:
            path_sequence: int | None = transits[0].path_sequence
            lifetime = transits[0].path_lifetime
        elif without_transit:
            path_sequence, lifetime = None, default_lifetime
        else:
            return [], "dao_without_transit_refused"
        for target in targets:
            if lifetime != NO_PATH_LIFETIME and not acceptable(target.prefix):
                return [], "dao_target_refused"
            updates.append(TargetUpdate(target.prefix, path_sequence, lifetime))
    return updates, None

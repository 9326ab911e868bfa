"""Neighbours heard in DIOs and OF0 parent selection for one DODAG Version (RFC 6552 §4.2,
RFC 6550 §8.2): the preferred parent gives the lowest resulting rank, the current one wins ties,
and every parent ranks strictly below the rank we will advertise."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from . import constants as c
from . import sequence
from .downward import NeighborKey
from .messages import Dio
from .of0 import dag_rank, rank_via
from .options import RFC6550_DEFAULTS, DodagConfiguration

VersionKey = tuple[ipaddress.IPv6Address, int]  # (DODAGID, DODAGVersionNumber)


@dataclass
class Neighbor:
    key: NeighborKey
    dio: Dio
    heard: float
    config: DodagConfiguration | None = None
    failed_until: float | None = None  # DAOs went unacknowledged: not a parent until then


@dataclass(frozen=True)
class Choice:
    key: VersionKey
    dio: Dio
    parents: list[NeighborKey]
    rank: int
    config: DodagConfiguration


def dodag_order(dio: Dio) -> tuple[bool, int, int]:
    """OF0 §4.2.1: grounded first, then preference; the DODAGID breaks ties so islands merge."""
    return (dio.grounded, dio.preference, int(dio.dodag_id))


def pick(key: VersionKey, members: list[Neighbor], in_use: DodagConfiguration | None,
         current_parents: list[NeighborKey], rank_factors: dict[str, int], lowest: int | None,
         max_parents: int) -> Choice | None:
    """Parents and rank in one DODAG Version, or None when no member keeps us within the rules.

    in_use: our configuration when key is our current Version; lowest: the lowest rank we ever
    advertised in that Version (§8.2.2.4 rule 3).
    """
    if not members:
        return None
    cfg = next((n.config for n in members if n.config is not None), None) or in_use \
        or RFC6550_DEFAULTS  # a root that sends no DODAG Configuration (§6.7.6: MAY)
    minhop = cfg.min_hop_rank_increase
    preferred = current_parents[0] if current_parents else None
    current = set(current_parents)

    def resulting(n: Neighbor) -> int:
        return rank_via(n.dio.rank, minhop, rank_factors.get(n.key[0], c.DEFAULT_RANK_FACTOR))

    ordered = sorted(members, key=lambda n: (resulting(n), n.key != preferred,
                                             n.key not in current, n.key[0], int(n.key[1])))
    rank = resulting(ordered[0])
    if rank >= c.INFINITE_RANK or (lowest is not None and rank > lowest + cfg.max_rank_increase):
        return None
    parents = [ordered[0].key] + [n.key for n in ordered[1:]
                                  if dag_rank(n.dio.rank, minhop) < dag_rank(rank, minhop)]
    return Choice(key, ordered[0].dio, parents[:max_parents], rank, cfg)


def compare_choices(a: Choice, b: Choice) -> int:
    """Better DODAG first (grounded, preference, DODAGID), then newer Version, then lower rank."""
    if dodag_order(a.dio) != dodag_order(b.dio):
        return 1 if dodag_order(a.dio) > dodag_order(b.dio) else -1
    order = sequence.compare(a.key[1], b.key[1]) or 0
    if order:
        return order
    return (a.rank < b.rank) - (a.rank > b.rank)


class VersionMemory:
    """What a node remembers about DODAG Versions it was in: the lowest rank it advertised there
    (§8.2.2.4 rule 3) and, after leaving one, until when its DIOs are ignored (the hold-down)."""

    SIZE = 32

    def __init__(self, hold_down: float) -> None:
        self.duration = hold_down
        self.lowest: dict[VersionKey, int] = {}
        self.until: dict[VersionKey, float] = {}
        self.hold_down_ends: list[float] = []

    def advertised(self, key: VersionKey, rank: int) -> None:
        self._remember(self.lowest, key, min(self.lowest.get(key, rank), rank))

    def hold_down(self, key: VersionKey, now: float) -> None:
        self._remember(self.until, key, now + self.duration)
        self.hold_down_ends.append(now + self.duration)

    def fresh(self, key: VersionKey, heard: float) -> bool:
        """A DIO of this Version heard at `heard` may be used (not from before a hold-down end)."""
        until = self.until.get(key)
        return until is None or heard >= until

    def hold_downs_ended(self, now: float) -> bool:
        ended = any(t <= now for t in self.hold_down_ends)
        if ended:
            self.hold_down_ends = [t for t in self.hold_down_ends if t > now]
        return ended

    def _remember(self, table: dict[VersionKey, Any], key: VersionKey, value: Any) -> None:
        table.pop(key, None)
        table[key] = value
        while len(table) > self.SIZE:
            del table[next(iter(table))]

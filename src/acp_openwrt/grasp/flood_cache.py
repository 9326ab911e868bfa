"""Received flooded objectives, keyed as RFC 8990 §2.8.11 says: by objective name and the
locator sent with it (a null tag when the locator was ``[]``). Same name and same tag overwrite;
a different tag makes a new entry; an entry is gone once its ttl is over (ttl 0 = no expiry)."""
from __future__ import annotations

import heapq
from typing import NamedTuple

from .messages import Locator, Objective


class FloodEntry(NamedTuple):
    objective: Objective
    locator: Locator | None
    initiator: bytes
    ifname: str
    expires: float  # local time in s; inf for ttl 0
    received: float


class FloodCache:
    """Bounded: past ``max_entries`` the expired entries, then those closest to expiry, make
    room; a batch of 1/16 of the cache at once, so that a flood of new names costs each a
    share of one scan, not a scan of the whole cache."""

    __slots__ = ("max_entries", "_entries", "_soonest")

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, Locator | None], FloodEntry] = {}
        # no entry expires before this (exact after expire(); an overwrite or removal may
        # leave it early, which costs one early timer): next_expiry() without a scan, as the
        # engine's next_timer() runs after every API call
        self._soonest = float("inf")

    def put(self, objective: Objective, locator: Locator | None, initiator: bytes, ifname: str,
            ttl_ms: int, now: float) -> FloodEntry:
        key = (objective.name, locator)
        expires = now + ttl_ms / 1000.0 if ttl_ms else float("inf")
        entry = FloodEntry(objective, locator, initiator, ifname, expires, now)
        entries = self._entries
        if key not in entries and len(entries) >= self.max_entries:
            self._make_room(now)
        entries[key] = entry
        if expires < self._soonest:
            self._soonest = expires
        return entry

    def _make_room(self, now: float) -> None:
        entries = self._entries
        self.expire(now)
        # a batch of 1/16 (at least 1/2, up to 32, of a small cache such as DULL's 64: a
        # spoofing host's every flood is a new entry, and each scan costs the whole cache)
        batch = max(1, self.max_entries // 16, min(32, self.max_entries // 2))
        excess = len(entries) - (self.max_entries - batch)
        if excess > 0:
            for key in heapq.nsmallest(excess, entries, key=lambda k: entries[k].expires):
                del entries[key]

    def get(self, name: str, now: float) -> list[FloodEntry]:
        """Unexpired entries for one objective name, one per tag."""
        return [e for (n, _), e in self._entries.items() if n == name and e.expires > now]

    def remove(self, name: str, locator: Locator | None) -> bool:
        return self._entries.pop((name, locator), None) is not None

    def expire(self, now: float) -> int:
        if self._soonest > now:
            return 0
        entries = self._entries
        gone = [k for k, e in entries.items() if e.expires <= now]
        for key in gone:
            del entries[key]
        self._soonest = min((e.expires for e in entries.values()), default=float("inf"))
        return len(gone)

    def next_expiry(self) -> float | None:
        """When the first entry expires (None: never), or a little earlier (see _soonest)."""
        soonest = self._soonest
        return None if soonest == float("inf") else soonest

    def entries(self) -> list[FloodEntry]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

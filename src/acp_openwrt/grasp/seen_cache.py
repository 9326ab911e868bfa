"""(Session ID, initiator) pairs seen recently: loop and duplicate suppression for relayed
floods and discoveries (RFC 8990 §2.5.4.4, §2.5.6.2)."""
from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any


class SeenCache:
    """Keys with a lifetime; a bounded FIFO, since every entry gets the same lifetime.

    RFC 8990 asks to keep flood pairs for at least 2 x GRASP_DEF_TIMEOUT; at a hostile rate that
    is unbounded, so the oldest entries go first once ``max_entries`` is reached (the loop count
    still bounds any loop that this lets through), 1/16 of them at once: a dict's first entry
    is found by skipping the slots of those deleted before it, so taking the oldest one at a
    time cost a walk of the deleted slots for every new key (3 us each at 16384 entries, more
    than the rest of a flood's intake) where a batch costs one walk for 1/16 of the keys.
    """

    __slots__ = ("lifetime", "max_entries", "_expiry", "_batch")

    def __init__(self, lifetime: float, max_entries: int) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        self._batch = max(1, max_entries // 16)
        self._expiry: dict[Hashable, tuple[float, Any]] = {}

    def add(self, key: Hashable, now: float, data: Any = None,
            lifetime: float | None = None) -> bool:
        """Remember ``key``; False if it was already there (a duplicate)."""
        entry = self._expiry.get(key)
        if entry is not None and entry[0] > now:
            return False
        if entry is not None:
            del self._expiry[key]
        elif len(self._expiry) >= self.max_entries:
            expiry = self._expiry
            for old in list(itertools.islice(expiry, self._batch)):
                del expiry[old]
        self._expiry[key] = (now + (self.lifetime if lifetime is None else lifetime), data)
        return True

    def get(self, key: Hashable, now: float) -> Any:
        entry = self._expiry.get(key)
        return entry[1] if entry is not None and entry[0] > now else None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._expiry

    def expire(self, now: float) -> list[tuple[Hashable, Any]]:
        """Drop entries whose time is up; return them (key, data)."""
        gone = [(k, e[1]) for k, e in self._expiry.items() if e[0] <= now]
        for key, _ in gone:
            del self._expiry[key]
        return gone

    def next_expiry(self) -> float | None:
        return min((e[0] for e in self._expiry.values()), default=None)

    def __len__(self) -> int:
        return len(self._expiry)

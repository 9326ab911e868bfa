"""The adjacency table (RFC 8994 §6.4/§6.5), sans-I/O: heard AN_ACP floods in, events out.

An entry is one neighbour (its link-local locator) on one DULL interface. It lives for the
flood's ttl after it was last heard; a neighbour that changes its methods is announced again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..events import AdjacencyDown, AdjacencyUp

MAX_ENTRIES = 4096  # a hostile link must not grow the table without bound


@dataclass
class Adjacency:
    peer: str
    ifname: str
    methods: tuple[str, ...]
    port: int
    expires: float
    first_seen: float
    last_seen: float
    heard: int = 1

    def to_dict(self, now: float, wall_offset: float) -> dict[str, Any]:
        return {"peer": self.peer, "interface": self.ifname, "methods": list(self.methods),
                "port": self.port, "ttl_s": round(max(0.0, self.expires - now), 1),
                "first_seen": round(self.first_seen + wall_offset, 3),
                "last_seen": round(self.last_seen + wall_offset, 3), "floods_heard": self.heard}


@dataclass
class AdjacencyTable:
    entries: dict[tuple[str, str], Adjacency] = field(default_factory=dict)
    full_drops: int = 0

    def heard(self, peer: str, ifname: str, methods: tuple[str, ...], port: int, ttl_s: float,
              now: float) -> list[AdjacencyUp]:
        """A flood arrived: add or refresh; AdjacencyUp when new or its methods changed."""
        key = (peer, ifname)
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= MAX_ENTRIES:
                self.full_drops += 1
                return []
            self.entries[key] = Adjacency(peer, ifname, methods, port, now + ttl_s, now, now)
            return [AdjacencyUp(peer, ifname, methods, port)]
        entry.expires = now + ttl_s
        entry.last_seen = now
        entry.heard += 1
        if (entry.methods, entry.port) != (methods, port):
            entry.methods, entry.port = methods, port
            return [AdjacencyUp(peer, ifname, methods, port)]
        return []

    def expire(self, now: float) -> list[AdjacencyDown]:
        gone = [key for key, entry in self.entries.items() if entry.expires <= now]
        return [self._drop(key) for key in gone]

    def drop_interface(self, ifname: str) -> list[AdjacencyDown]:
        return [self._drop(key) for key in list(self.entries) if key[1] == ifname]

    def clear(self) -> list[AdjacencyDown]:
        return [self._drop(key) for key in list(self.entries)]

    def _drop(self, key: tuple[str, str]) -> AdjacencyDown:
        entry = self.entries.pop(key)
        return AdjacencyDown(entry.peer, entry.ifname)

    def next_expiry(self) -> float | None:
        return min((e.expires for e in self.entries.values()), default=None)

    def to_list(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.monotonic() if now is None else now
        offset = time.time() - time.monotonic()
        return [e.to_dict(now, offset) for e in sorted(self.entries.values(),
                                                       key=lambda e: (e.ifname, e.peer))]

"""Session IDs (RFC 8990 §2.7): random 32-bit values, never one in use or recently used here.

The random source is injected (``random.SystemRandom()`` in production, a seeded
``random.Random`` in tests), so the engine stays deterministic under test.
"""
from __future__ import annotations

import random
from collections.abc import Container

from .seen_cache import SeenCache


class SessionIds:
    """Allocates our own Session IDs; a received pair (id, initiator) is a different key."""

    def __init__(self, rng: random.Random, recent_lifetime: float = 120.0,
                 max_recent: int = 65536) -> None:
        self._rng = rng
        self._recent = SeenCache(recent_lifetime, max_recent)

    def new(self, now: float, in_use: Container[int] = frozenset()) -> int:
        """A fresh id: not in ``in_use`` and not handed out within ``recent_lifetime``."""
        while True:
            sid = self._rng.getrandbits(32)
            if sid not in in_use and self._recent.add(sid, now):
                return sid

    def expire(self, now: float) -> None:
        self._recent.expire(now)

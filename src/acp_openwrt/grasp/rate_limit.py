"""Per-key token buckets, time passed in: throttles a neighbour that sends too fast or sends
garbage, without touching anybody else's budget."""
from __future__ import annotations

from collections.abc import Hashable


class TokenBuckets:
    """One bucket per key (e.g. (ifname, source address)); ``rate`` tokens/s up to ``burst``.

    Buckets of idle keys are forgotten when more than ``max_keys`` exist (an idle bucket is
    full anyway), so a sender cycling through source addresses cannot grow memory without bound.
    """

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, list[float]] = {}

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket; False (nothing spent) if it has too few."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        if bucket[0] < cost:
            return False
        bucket[0] -= cost
        return True

    def penalise(self, key: Hashable, cost: float) -> None:
        """Take tokens even into debt (garbage costs more than a good message)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = max(bucket[0] - cost, -self.burst)

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # all busy: drop the oldest half
            for key in list(self._buckets)[: self.max_keys // 2]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

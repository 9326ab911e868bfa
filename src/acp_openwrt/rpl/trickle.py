"""The Trickle timer (RFC 6206 §4.2) that paces DIOs (RFC 6550 §8.3); sans-I/O, time passed in."""
from __future__ import annotations

import random


class Trickle:
    """One Trickle timer: poll(now) says whether to transmit; next_event() says when to poll."""

    def __init__(self, imin: float, doublings: int, k: int, rng: random.Random) -> None:
        self.imin = imin
        self.imax = imin * (1 << doublings)
        self.k = k  # 0: infinity, never suppress (RFC 6550 §8.3.1)
        self._rng = rng
        self.interval = imin
        self._start = 0.0
        self._t = 0.0
        self._fired = False
        self._counter = 0
        self.running = False

    def configure(self, imin: float, doublings: int, k: int, now: float) -> None:
        """Adopt new parameters (a DODAG configuration); restarts only when they changed."""
        imax = imin * (1 << doublings)
        if (imin, imax, k) != (self.imin, self.imax, self.k):
            self.imin, self.imax, self.k = imin, imax, k
            self.start(now)

    def _begin(self, now: float, interval: float) -> None:
        self.interval = interval
        self._start = now
        self._t = now + self._rng.uniform(interval / 2, interval)
        self._fired = False
        self._counter = 0

    def start(self, now: float) -> None:
        self.running = True
        self._begin(now, self.imin)

    def stop(self) -> None:
        self.running = False

    def reset(self, now: float) -> None:
        """An inconsistency: back to Imin unless already there (RFC 6206 §4.2 rule 6)."""
        if not self.running:
            self.start(now)
        elif self.interval > self.imin:
            self._begin(now, self.imin)

    def heard_consistent(self) -> None:
        self._counter += 1

    def next_event(self) -> float | None:
        if not self.running:
            return None
        return self._start + self.interval if self._fired else self._t

    def poll(self, now: float) -> bool:
        """Advance to now; True when a transmission is due (at most one per call)."""
        if not self.running:
            return False
        send = False
        while True:
            end = self._start + self.interval
            if not self._fired and now >= self._t:
                self._fired = True
                send = send or self.k == 0 or self._counter < self.k
            elif self._fired and now >= end:
                # A caller that slept through many intervals restarts from now, not from the past.
                start = end if now - end < self.imax else now
                self._begin(start, min(self.interval * 2, self.imax))
            else:
                return send

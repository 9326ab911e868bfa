"""The discrete-event kernel: one heap of (time, sequence, callback), a seeded RNG, and the
CoreTimer of docs/core-contract.md redone on simulated time (one timer per core, re-armed at
``next_timer()`` after every input, stale arms ignored)."""
from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Any

from ...core import ProtocolCore

# A core asking to run again at the same instant this many times is spinning (a bug in the
# core or in its driving); the timer then steps 1 ms ahead and counts it.
SPIN_LIMIT = 64


class Kernel:
    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events = 0
        self.spins = 0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run_until(self, end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _seq, fn, args = heapq.heappop(heap)
            self.now = when
            self.events += 1
            fn(*args)
        self.now = max(self.now, end)

    def pending(self) -> int:
        return len(self._heap)

    def child_rng(self) -> random.Random:
        """An RNG for one core, drawn from the kernel's: same seed, same draws."""
        return random.Random(self.rng.getrandbits(64))


class SimTimer:
    """core.CoreTimer on the kernel's clock."""

    __slots__ = ("kernel", "core", "execute", "ceiling", "when", "token", "_spin_at", "_spins")

    def __init__(self, kernel: Kernel, core: ProtocolCore[Any],
                 execute: Callable[[Sequence[Any]], None], ceiling: float | None = None) -> None:
        self.kernel = kernel
        self.ceiling = ceiling
        self.core = core
        self.execute = execute
        self.when: float | None = None
        self.token = 0
        self._spin_at = -1.0
        self._spins = 0

    def feed(self, outputs: Sequence[Any]) -> None:
        if outputs:
            self.execute(outputs)
        self.rearm()

    def rearm(self) -> None:
        due = self.core.next_timer()
        capped = False
        if self.ceiling is not None:
            cap = self.kernel.now + self.ceiling
            if due is None or due > cap:
                due, capped = cap, True
        if due is None:
            if self.when is not None:
                self.token += 1
                self.when = None
            return
        due = max(due, self.kernel.now)
        if self.when is not None and (abs(self.when - due) <= 1e-9
                                      or (capped and self.when <= due)):
            return
        self.token += 1
        self.when = due
        self.kernel.at(due, self._fire, self.token)

    def _fire(self, token: int) -> None:
        if token != self.token:
            return
        now = self.kernel.now
        self.when = None
        if now == self._spin_at:
            self._spins += 1
        else:
            self._spin_at, self._spins = now, 0
        outputs = self.core.handle_timer(now)
        if outputs:
            self.execute(outputs)
        if self._spins >= SPIN_LIMIT:
            self.kernel.spins += 1
            self._spins = 0
            self.token += 1
            self.when = now + 0.001
            self.kernel.at(self.when, self._fire, self.token)
            return
        self.rearm()

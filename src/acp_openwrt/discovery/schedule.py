"""When discovery floods next, without I/O: each objective (AN_ACP every `discovery_interval`,
AN_Proxy every 10 s) has its own period, each one drawn anew within ±`jitter` of it so
neighbours do not synchronise (RFC 8994 §6.4 leaves the period to the node).

A protocol core (docs/core-contract.md): `next_timer()` is the soonest flood due,
`handle_timer(now)` says which objectives are due (in the order given) and draws their next
period from `now`. The discovery part runs it on one loop timer and floods on every link.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

JITTER = 0.1   # ±10 % on every period


@dataclass(frozen=True)
class FloodDue:
    """Time to flood this objective on every link it is announced on."""
    objective: str


class FloodSchedule:
    def __init__(self, periods: Mapping[str, float], now: float, *,
                 rng: random.Random | None = None, jitter: float = JITTER) -> None:
        self.periods = dict(periods)
        self.rng = rng or random.Random()
        self.jitter = jitter
        self._due = {name: now + self._period(name) for name in self.periods}

    def _period(self, name: str) -> float:
        return self.periods[name] * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

    def next_timer(self) -> float | None:
        return min(self._due.values(), default=None)

    def handle_timer(self, now: float) -> list[FloodDue]:
        out = []
        for name, due in list(self._due.items()):
            if due <= now:
                out.append(FloodDue(name))
                self._due[name] = now + self._period(name)
        return out

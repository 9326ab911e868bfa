"""How many log lines one kind of message may take, time passed in: a flood of hostile
floods must not become a flood of log lines (nor fill a router's small log partition)."""
from __future__ import annotations


class LogBudget:
    """Per key: ``burst`` lines at once, then one line per ``period`` seconds; the line that is
    allowed after a quiet spell learns how many were suppressed before it."""

    __slots__ = ("burst", "period", "_state")

    def __init__(self, burst: int = 5, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._state: dict[str, list[float]] = {}  # key -> [tokens, last refill, suppressed]

    def allow(self, key: str, now: float) -> int | None:
        """None: do not log. Otherwise log, and mention this many suppressed lines (if any)."""
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = [float(self.burst), now, 0.0]
        else:
            state[0] = min(float(self.burst), state[0] + (now - state[1]) / self.period)
            state[1] = now
        if state[0] < 1.0:
            state[2] += 1
            return None
        state[0] -= 1.0
        suppressed, state[2] = int(state[2]), 0.0
        return suppressed


def suppressed_note(count: int) -> str:
    return f" ({count} more like it not logged)" if count else ""

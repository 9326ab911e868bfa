"""RPL lollipop counters (RFC 6550 §7.2): DODAGVersionNumber, DTSN, DAOSequence, Path Sequence.

128..255 is the start-up (linear) region, 0..127 the circular region; values start at 240.
"""
from __future__ import annotations

SEQUENCE_WINDOW = 16
INITIAL_SEQUENCE = 240
_CIRCULAR = 128


def increment(value: int) -> int:
    """Next value: 255 wraps to 0 (leaving the linear region), 127 wraps to 0 (circular)."""
    if not 0 <= value <= 255:
        raise ValueError(f"lollipop counter {value} outside 0..255")
    if value == 127 or value == 255:
        return 0
    return value + 1


def compare(a: int, b: int) -> int | None:
    """1 if a is newer than b, -1 if older, 0 if equal, None if not comparable (§7.2)."""
    if a == b:
        return 0
    if a >= _CIRCULAR and b < _CIRCULAR:
        return -1 if 256 + b - a <= SEQUENCE_WINDOW else 1
    if b >= _CIRCULAR and a < _CIRCULAR:
        return 1 if 256 + a - b <= SEQUENCE_WINDOW else -1
    if a >= _CIRCULAR:
        diff = a - b  # both linear: no wrap
    else:
        # Both circular: RFC 1982 arithmetic modulo 128, so 127 -> 0 is one step.
        diff = (a - b) % _CIRCULAR
        if diff > _CIRCULAR // 2:
            diff -= _CIRCULAR
    if abs(diff) > SEQUENCE_WINDOW:
        return None
    return 1 if diff > 0 else -1


def newer(a: int, b: int) -> bool:
    """True when a is strictly newer than b; incomparable values count as newer (fresh start)."""
    result = compare(a, b)
    return result is None or result > 0

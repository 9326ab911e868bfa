"""Objective Function Zero (RFC 6552) with the ACP rank factors (RFC 8994 §6.12.1.6)."""
from __future__ import annotations

from . import constants as c


def rank_factor_for_speed(mbit_per_s: float | None) -> int:
    """ACP rank_factor: 5 for links up to 100 Mbit/s, 1 above (and when the speed is unknown)."""
    if mbit_per_s is not None and mbit_per_s <= 100:
        return c.LOW_SPEED_FACTOR
    return c.HIGH_SPEED_FACTOR


def rank_increase(min_hop_rank_increase: int, rank_factor: int = c.DEFAULT_RANK_FACTOR,
                  step_of_rank: int = c.DEFAULT_STEP_OF_RANK,
                  stretch: int = c.DEFAULT_RANK_STRETCH) -> int:
    """(Rf * Sp + Sr) * MinHopRankIncrease (RFC 6552 §4.1)."""
    step = max(c.MINIMUM_STEP_OF_RANK, min(step_of_rank, c.MAXIMUM_STEP_OF_RANK))
    return (rank_factor * step + stretch) * min_hop_rank_increase


def rank_via(parent_rank: int, min_hop_rank_increase: int, rank_factor: int) -> int:
    """R(N) = R(P) + rank_increase, saturating at INFINITE_RANK."""
    if parent_rank >= c.INFINITE_RANK:
        return c.INFINITE_RANK
    return min(parent_rank + rank_increase(min_hop_rank_increase, rank_factor), c.INFINITE_RANK)


def dag_rank(rank: int, min_hop_rank_increase: int) -> int:
    """DAGRank (RFC 6550 §3.5.1): rank comparisons use its integer part."""
    return rank // min_hop_rank_increase

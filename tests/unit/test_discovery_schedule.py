"""The periodic floods' schedule (discovery/schedule.py) with plain numbers: each objective at
its own period, each period jittered within ±10 %, drawn anew from when it was handled."""
from __future__ import annotations

import random

from acp_openwrt.discovery.schedule import FloodDue, FloodSchedule


def test_each_objective_at_its_own_jittered_period() -> None:
    schedule = FloodSchedule({"AN_ACP": 60.0, "AN_Proxy": 10.0}, now=100.0,
                             rng=random.Random(7))
    floods: dict[str, list[float]] = {"AN_ACP": [], "AN_Proxy": []}
    now = 100.0
    while now < 100.0 + 3600:
        due = schedule.next_timer()
        assert due is not None and due > now
        assert schedule.handle_timer(due - 0.001) == []   # early: nothing
        now = due
        for flood in schedule.handle_timer(now):
            floods[flood.objective].append(now)
    for name, period in (("AN_ACP", 60.0), ("AN_Proxy", 10.0)):
        gaps = [b - a for a, b in zip(floods[name], floods[name][1:], strict=False)]
        assert all(0.9 * period <= gap <= 1.1 * period for gap in gaps), name
        assert len(set(gaps)) > len(gaps) // 2        # jittered, not one fixed period
    assert 54 <= len(floods["AN_ACP"]) <= 66 and 327 <= len(floods["AN_Proxy"]) <= 400


def test_late_handling_floods_once_and_counts_from_then() -> None:
    schedule = FloodSchedule({"AN_ACP": 60.0}, now=0.0, rng=random.Random(1), jitter=0.0)
    assert schedule.next_timer() == 60.0
    assert schedule.handle_timer(500.0) == [FloodDue("AN_ACP")]   # a stalled loop: once
    assert schedule.next_timer() == 560.0
    assert FloodSchedule({}, now=0.0).next_timer() is None

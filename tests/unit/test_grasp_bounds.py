"""Under a sustained flood at the default limits, every GRASP cache stays within its bound, and
a full flood cache costs a new entry about what an empty one does."""
from __future__ import annotations

import random

import cbor2
import pytest

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.flood_cache import FloodCache
from acp_openwrt.grasp.messages import Locator, Objective

OWN_LL = bytes.fromhex("fe80" + "00" * 13 + "01")


def _hostile_flood(i: int) -> tuple[bytes, bytes]:
    """(source, datagram): a well-formed flood, everything distinct (source, session id,
    initiator, objective, locator)."""
    src = bytes.fromhex("fe80") + bytes(10) + (0x10000 + i).to_bytes(4, "big")
    data = cbor2.dumps([c.M_FLOOD, i + 1, src, 60000,
                        [[f"X{i}", c.F_SYNCH, 1, "v" * 32],
                         [c.O_IPv6_LOCATOR, src, c.IPPROTO_TCP, 1024 + i % 60000]]])
    return src, data


def test_caches_stay_bounded_under_a_distinct_flood() -> None:
    cfg = EngineConfig(dull=True)  # the defaults, as a GRASP instance runs them
    engine = Engine(cfg, random.Random(1))
    engine.add_interface("eth0", OWN_LL)
    peak: dict[str, int] = {}
    for i in range(40000):
        src, data = _hostile_flood(i)
        engine.receive_datagram("eth0", src, data, i / 4000)  # 4000/s for 10 s
        if i % 500 == 499:
            for name, n in engine.cache_sizes().items():
                peak[name] = max(peak.get(name, 0), n)
    assert engine.counters["flood_accepted"] == 40000  # nothing throttled: distinct sources
    assert peak["flood_cache"] == cfg.max_flood_entries
    assert cfg.max_seen - cfg.max_seen // 16 < peak["seen_floods"] <= cfg.max_seen
    assert 0 < peak["neighbour_buckets"] <= 4096
    flood_caches = ("flood_cache", "seen_floods", "neighbour_buckets")
    assert sum(n for name, n in peak.items() if name not in flood_caches) == 0
    # (the memory these hold, sampled over a longer flood: bench/grasp_flood_memory.py)


def test_cache_sizes_name_every_cache() -> None:
    engine = Engine(EngineConfig(), random.Random(1))
    assert set(engine.cache_sizes()) == {
        "flood_cache", "seen_floods", "neighbour_buckets", "relay_buckets", "relayed_discoveries",
        "discovered_locators", "pending_discoveries", "sessions", "streams", "recent_session_ids"}


def test_a_full_flood_cache_makes_room_in_amortised_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scan of the cache (to make room) frees a batch of 1/16 of it, so a flood of new
    names costs each a share of one scan: counted, not timed (a scan for every new entry was
    ~20x the cost of an insert; bench/grasp_flood_memory.py has the rates)."""
    scans: list[int] = []
    make_room = FloodCache._make_room

    def counted(self: FloodCache, now: float) -> None:
        scans.append(len(self))
        make_room(self, now)
    monkeypatch.setattr(FloodCache, "_make_room", counted)
    full = FloodCache(1024)
    loc = Locator(c.O_IPv6_LOCATOR, OWN_LL, c.IPPROTO_TCP, 7017)
    for i in range(1024 + 4000):
        full.put(Objective(f"X{i}", c.F_SYNCH, 1, 0), loc, OWN_LL, "eth0", 60000, i * 1e-4)
    assert len(full) <= 1024
    assert len(scans) <= 4000 // (1024 // 16) + 1, len(scans)  # one scan per 64 new names
    assert sum(scans) <= 70 * 1024
    scans.clear()
    small = FloodCache(64)   # DULL's: a batch of half of it
    for i in range(64 + 3200):
        small.put(Objective(f"X{i}", c.F_SYNCH, 1, 0), loc, OWN_LL, "eth0", 60000, i * 1e-4)
    assert len(small) <= 64
    assert len(scans) <= 3200 // 32 + 1, len(scans)


def test_flood_cache_evicts_what_expires_first() -> None:
    cache = FloodCache(32)
    for i in range(32):
        cache.put(Objective(f"X{i}", 4, 1, 0), None, OWN_LL, "eth0", 1000 * (i + 1), 0.0)
    cache.put(Objective("NEW", 4, 1, 0), None, OWN_LL, "eth0", 600000, 0.0)
    names = {e.objective.name for e in cache.entries()}
    assert "NEW" in names and "X31" in names and "X0" not in names and len(cache) <= 32
    cache.put(Objective("EXPIRED", 4, 1, 0), None, OWN_LL, "eth0", 1, 0.0)
    # at t = 100 s everything but NEW has expired: room is made from the expired entries first
    for i in range(40):
        cache.put(Objective(f"LATE{i}", 4, 1, 0), None, OWN_LL, "eth0", 60000, 100.0)
    names = {e.objective.name for e in cache.entries()}
    assert "NEW" in names and len(cache) <= 32


def test_discovered_locators_are_bounded() -> None:
    from acp_openwrt.grasp.actions import Discovered, SendMulticast
    from acp_openwrt.grasp.codec import decode, encode
    from acp_openwrt.grasp.messages import Response

    ours = bytes.fromhex("fd00" + "00" * 13 + "02")
    cfg = EngineConfig(address=ours)
    engine = Engine(cfg, random.Random(1))
    engine.add_interface("eth0", OWN_LL)
    peer = bytes.fromhex("fd00" + "00" * 13 + "09")
    for round_ in range(3):  # three discoveries, each answered with 2000 distinct locators
        handle, out = engine.discover(Objective(f"EX{round_}", c.F_DISC | c.F_SYNCH, 2),
                                      now=round_, timeout_ms=500)
        (sent,) = [o for o in out if isinstance(o, SendMulticast)]
        sid = decode(sent.data).session_id
        locators = tuple(Locator(c.O_IPv6_LOCATOR, peer[:12] + i.to_bytes(4, "big"),
                                 c.IPPROTO_TCP, 7017)
                         for i in range(2000))
        conn, _ = engine.stream_accepted(peer, None, round_)
        engine.receive_stream_message(conn, encode(Response(sid, ours, 3_600_000, locators)),
                                      round_ + 0.1)
        (done,) = [o for o in engine.handle_timer(round_ + 0.6) if isinstance(o, Discovered)]
        assert done.handle == handle and 0 < len(done.locators) <= cfg.max_discovered
        assert engine.cache_sizes()["discovered_locators"] <= cfg.max_discovered


def test_service_status_shows_the_cache_sizes() -> None:
    from acp_openwrt.grasp.service import GraspService
    svc = GraspService(mode="acp", address="fd00::2")
    assert svc.status()["caches"] == svc.engine.cache_sizes()

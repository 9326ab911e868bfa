"""DULL discovery without sockets: heard AN_ACP floods (as the DULL GRASP hands them over) in,
bus events, counters and log lines out. What a hostile neighbour's floods become (issue 15)."""
from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path

import pytest

from acp_openwrt import events
from acp_openwrt.config.schema import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.discovery.adjacency import Limits
from acp_openwrt.discovery.an_acp import (
    BAD_METHOD,
    LOCATOR_MISMATCH,
    UNUSABLE_LOCATOR,
    Offer,
    Refused,
    methods_of,
    our_flood,
    read_offer,
)
from acp_openwrt.discovery.liveness import Offer as LiveOffer
from acp_openwrt.discovery.log_budget import LogBudget
from acp_openwrt.discovery.part import DiscoveryPart
from acp_openwrt.events import EventBus
from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import FloodReceived
from acp_openwrt.grasp.codec import decode, encode
from acp_openwrt.grasp.messages import Flood, Locator, Objective, TaggedObjective
from acp_openwrt.node_context import NodeContext

REAL = "fe80::1"


def raw(address: str) -> bytes:
    return ipaddress.IPv6Address(address).packed


def heard(source: str, locator: str | None = None, initiator: str | None = None,
          value: object = "IKEv2", ttl_ms: int = 210_000, ifname: str = "eth0",
          protocol: int = c.IPPROTO_UDP) -> FloodReceived:
    """What the DULL GRASP hands over for one received AN_ACP flood."""
    loc = Locator(c.O_IPv6_LOCATOR, raw(locator or source), protocol, 500)
    return FloodReceived(ifname, raw(initiator or source), Objective("AN_ACP", c.F_SYNCH, 1, value),
                         loc, 0.0, raw(source), ttl_ms)


def test_a_genuine_flood_is_an_offer() -> None:
    assert read_offer(heard(REAL)) == Offer(REAL, 500, ("IKEv2",))


@pytest.mark.parametrize("flood", [
    heard("fe80::1", locator="fe80::2"),           # the issue: locator not the sender
    heard("fe80::1", initiator="fe80::2"),         # initiator not the sender
    heard("fe80::1", locator="fe80::2", initiator="fe80::2"),  # both agree, the source does not
])
def test_a_locator_that_is_not_the_sender_is_refused(flood: FloodReceived) -> None:
    refused = read_offer(flood)
    assert isinstance(refused, Refused) and refused.reason == LOCATOR_MISMATCH
    assert "fe80::1" in refused.detail and "fe80::2" in refused.detail


@pytest.mark.parametrize("address", [
    "fe80::1", "fe80::a:0:0:1", "fe80:0:0:1::", "fe80::1:0:0:2:3", "febf::ffff:0:0:1",
    "fe80:1:0:0:1:0:0:1", "fe80:0:1:0:0:0:2:3", "fe80::ffff:1.2.3.4",
])
def test_the_offer_names_its_neighbour_as_ipaddress_does(address: str) -> None:
    """Offers are keyed by the address text (the channels, `acpctl neighbors`): the fast
    path must write every link-local as str(IPv6Address) does (RFC 5952)."""
    offer = read_offer(heard(address))
    assert isinstance(offer, Offer) and offer.peer == str(ipaddress.IPv6Address(address))


@pytest.mark.parametrize("flood", [
    heard(REAL, locator="fd00::1"),                # not link-local
    heard(REAL, locator="fec0::1"),                # site-local, just past fe80::/10
    heard(REAL, protocol=c.IPPROTO_TCP),
    heard(REAL)._replace(locator=None),            # RFC 8994 makes the locator optional; we need it
])
def test_unusable_locators_are_refused(flood: FloodReceived) -> None:
    refused = read_offer(flood)
    assert isinstance(refused, Refused) and refused.reason == UNUSABLE_LOCATOR


@pytest.mark.parametrize("value, methods", [
    ("IKEv2", ("IKEv2",)), ("DTLS", ("DTLS",)),
    (["IKEv2", {"future": 1}], ("IKEv2",)),        # [method, *extension]
    ([["IKEv2", 1, 2], "ext"], ("IKEv2",)),        # [[method-name, *method-param], ...]
    (7, None), ("", None), (None, None), ([], None), ({"IKEv2": 1}, None), (b"IKEv2", None),
    ("IKEv1", None), ("ikev2", None), ([[]], None),
])
def test_methods_of_an_objective_value(value: object, methods: tuple[str, ...] | None) -> None:
    assert methods_of(value) == methods


def test_our_flood_passes_our_own_check() -> None:
    objective, locator = our_flood("fe80::7")
    msg = Flood(1 << 20, raw("fe80::7"), 210_000, (TaggedObjective(objective, locator),))
    got = decode(encode(msg))
    rec = FloodReceived("eth0", got.initiator, got.objectives[0].objective,
                        got.objectives[0].locator, 0.0, raw("fe80::7"), got.ttl)
    assert read_offer(rec) == Offer("fe80::7", 500, ("IKEv2",))


def test_log_budget() -> None:
    budget = LogBudget(burst=2, period=10)
    assert [budget.allow("x", 0) for _ in range(5)] == [0, 0, None, None, None]
    assert budget.allow("y", 0) == 0  # another key has its own budget
    assert budget.allow("x", 9) is None
    assert budget.allow("x", 10) == 4  # one token back after a period: 4 were suppressed
    assert budget.allow("x", 10) is None


@pytest.fixture
def discovery(tmp_path: Path) -> tuple[DiscoveryPart, list]:
    config = AcpConfig(run_dir=tmp_path)
    ctx = NodeContext(config, EventBus(), ControlServer(config.control_socket))
    seen: list = []
    for kind in (events.AdjacencyUp, events.AdjacencyDown):
        ctx.bus.subscribe(kind, seen.append)
    return DiscoveryPart(ctx, limits=Limits(per_interface=16)), seen


def test_hostile_floods_are_counted_and_logged_within_budget(discovery, caplog) -> None:
    disc, seen = discovery
    caplog.set_level(logging.INFO, logger="acpd.discovery")
    for n in range(1, 1001):  # the flood: one sender, a new locator each time
        disc._heard(heard("fe80::66", locator=f"fe80::a:{n:x}", initiator=f"fe80::a:{n:x}",
                          ttl_ms=0))
    for n in range(1, 101):
        disc._heard(heard(f"fe80::b:{n:x}", value=n))  # a non-string method
        disc._heard(heard(f"fe80::c:{n:x}", value="IKEv2\n2026 forged log line"))
    assert seen == [] and disc.table.entries == {}
    status = disc.status()
    assert status["drops"][LOCATOR_MISMATCH] == 1000
    assert status["drops"][BAD_METHOD] == 200
    assert status["unusable_floods"] == status["drops"][UNUSABLE_LOCATOR] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert 0 < len(lines) <= 10, lines  # 1200 drops, a few lines
    assert not any("\n" in line for line in lines)
    assert any("locator fe80::a:1, initiator fe80::a:1, sent from fe80::66" in line
               for line in lines)


def test_a_spoofed_flood_fills_only_its_link_and_is_counted(discovery, caplog) -> None:
    disc, seen = discovery
    caplog.set_level(logging.INFO, logger="acpd.discovery")
    disc._heard(heard(REAL, ifname="eth0"))
    disc._channel_up(events.ChannelUp(REAL, "eth0", "acp0", "node"))  # confirmed
    for n in range(1, 5001):
        disc._heard(heard(f"fe80::a:{n:x}", ttl_ms=0))  # spoofed sources, so locator == source
    disc._heard(heard("fe80::2", ifname="eth1"))
    assert events.AdjacencyUp("fe80::2", "eth1", ("IKEv2",), 500) in seen
    assert (REAL, "eth0") in disc.table.entries
    status = disc.status()
    assert status["table"]["entries"] == 16 + 1
    assert status["table"]["evicted"] == 5000 - 15
    assert status["table"]["ttl_capped"] == 5000
    assert status["table"]["confirmed"] == {"channel": 1, "reheard": 0, "answer": 0}
    assert status["table"]["limits"]["per_interface"] == 16
    # The first 15 fakes found room and were announced. From the first eviction on, eth0 is
    # under pressure: newcomers there wait for a confirmation before the bus hears of them,
    # so the channels part heard of none of the other 4985, neither Up nor Down.
    ups = [e for e in seen if isinstance(e, events.AdjacencyUp) and e.peer.startswith("fe80::a")]
    downs = [e for e in seen if isinstance(e, events.AdjacencyDown)]
    assert len(ups) == len(downs) == 15 and events.AdjacencyDown(REAL, "eth0") not in downs
    assert status["held"] == {"now": 15, "total": 5000 - 15, "links_under_pressure": ["eth0"]}
    assert len(caplog.records) <= 20  # 5000 newcomers, ~5000 evictions


def test_a_held_newcomer_is_announced_once_it_answers(discovery) -> None:
    """Under pressure an unconfirmed newcomer is held back; its echo answer confirms it, and
    then the channels hear AdjacencyUp and AdjacencyAlive, in that order."""
    disc, seen = discovery
    alive: list = []
    disc.ctx.bus.subscribe(events.AdjacencyAlive, alive.append)
    for n in range(1, 40):
        disc._heard(heard(f"fe80::a:{n:x}", ttl_ms=0))
    disc._heard(heard("fe80::d"))
    assert not [e for e in seen if getattr(e, "peer", "") == "fe80::d"]
    # the liveness core as the running part drives it: d heard, a probe out, d's answer in
    now = time.monotonic()
    disc.liveness.heard("eth0", "fe80::d", LiveOffer(("IKEv2",), 500, 210_000), now)
    for out in disc.liveness.answered("eth0", "fe80::d", now + 0.01):
        disc._alive(out, now + 0.01)
    assert [e for e in seen if e.peer == "fe80::d"] == [
        events.AdjacencyUp("fe80::d", "eth0", ("IKEv2",), 500)]
    assert alive == [events.AdjacencyAlive("fe80::d", "eth0")]
    assert disc.table.entries[("fe80::d", "eth0")].confirmed == "answer"


def test_a_quiet_link_announces_every_newcomer_at_once(discovery) -> None:
    disc, seen = discovery
    for n in range(1, 10):
        disc._heard(heard(f"fe80::b:{n:x}"))
    assert len([e for e in seen if isinstance(e, events.AdjacencyUp)]) == 9
    assert disc.status()["held"]["now"] == 0


def test_the_period_comes_from_the_config(tmp_path: Path) -> None:
    config = AcpConfig(run_dir=tmp_path, discovery_interval=2)
    disc = DiscoveryPart(NodeContext(config, EventBus(), ControlServer(config.control_socket)))
    assert disc.interval == 2.0 and disc.ttl_ms == 7000
    assert disc.table.limits.max_ttl_s == 7.0 and disc.table.limits.confirm_span_s == 1.6


def test_newcomers_are_answered_more_often_on_a_link_under_pressure(
        discovery, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a second on a quiet link; five times a second while spoofed newcomers evict each
    other (most floods are lost on such a link: a real newcomer needs more chances)."""
    from acp_openwrt.discovery import part as part_module
    disc, _ = discovery
    clock = [1000.0]
    monkeypatch.setattr(part_module, "_now", lambda: clock[0])
    answers: list[tuple[str, float]] = []
    monkeypatch.setattr(disc, "_flood", lambda ifname: answers.append((ifname, clock[0])))
    for n in range(1, 16):   # eth1: 5 newcomers a second for 3 s, room for all of them
        disc._heard(heard(f"fe80::b:{n:x}", ifname="eth1"))
        clock[0] += 0.2
    quiet = [t for link, t in answers if link == "eth1"]
    assert len(quiet) == 3, quiet
    for n in range(1, 51):   # eth0: 10 a second for 5 s; 16 fill it, then every one evicts
        disc._heard(heard(f"fe80::a:{n:x}", ttl_ms=0))
        clock[0] += 0.1
    pressed = [t for link, t in answers if link == "eth0"]
    assert len(pressed) >= 2 + 16, pressed   # 2 while it filled (1.6 s), 5 a second after
    gaps = [b - a for a, b in zip(pressed, pressed[1:], strict=False)]
    assert min(gaps) >= 0.2 - 1e-9

"""acpd's DULL discovery: flood AN_ACP on every DULL link, hear others', keep the adjacency table.

RFC 8994 §6.4: with a valid LDevID the node floods ["AN_ACP", 4, 1, "IKEv2"] with an IPv6
locator (its link-local on that link, UDP 500) on every DULL interface, at once when the link
gets its address and every `discovery_interval` (60 s; ttl 3.5 times that) with jitter.
Without an LDevID it floods nothing (it is a pledge), but it still listens, so `acpctl
neighbors` shows what is around, and asks each link for a join proxy: an M_DISCOVERY for
AN_Proxy when the link comes up, retried with back-off (solicit.py). A node whose join proxy
serves a link answers such a solicitation there with its AN_Proxy flood at once (at most once a
second per link), so a pledge next to a proxy already serving need not wait for its next
periodic flood.

A DULL link may hold a hostile host (issue 15): a flood that is not a usable neighbour is
counted and dropped (an_acp.py), the table is bounded per link (adjacency.py), and a confirmed
neighbour gets a receive socket of its own (GraspService.watch_peer) so that a flood from
spoofed addresses, which overflows the link's socket, cannot crowd it out. An unconfirmed
neighbour also makes the node ask its link who is really there (liveness.py: one echo to all
nodes, at most one a second per link): one that answers is confirmed and announced
AdjacencyAlive, so its channel goes ahead of the spoofed ones. While a link is under pressure
(its table evicted an entry in the last PRESSURE_HOLD_S), an unconfirmed newcomer there is
held back from the bus: the channels part hears of it (AdjacencyUp) only once it is confirmed,
so thousands of spoofed locators cost no channel work at all; on a quiet link every newcomer
is announced at once, as before. Drops are logged through a
LogBudget: a flood of floods is a handful of log lines.

The table is a sans-I/O core (docs/core-contract.md): this part gives it the loop's clock with
every flood and runs its expiry on one loop timer (core.CoreTimer) at its next_timer(); the
periodic floods are a core too (schedule.py), on a loop timer of their own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any

from .. import events
from ..core import CoreTimer
from ..events import AnProxyStart, AnProxyStop, PledgeSolicited
from ..grasp import constants as c
from ..grasp.actions import FloodReceived
from ..grasp.engine import EngineConfig
from ..grasp.errors import GraspApiError
from ..grasp.messages import Locator, Objective
from ..grasp.service import GraspService
from ..node_context import NodeContext, Part
from .adjacency import BY_ANSWER, BY_CHANNEL, AdjacencyTable, Confirmed, Limits
from .an_acp import (
    AN_ACP,
    BAD_METHOD,
    LOCATOR_MISMATCH,
    UNUSABLE_LOCATOR,
    Refused,
    our_flood,
    read_offer,
)
from .echo import EchoSocket
from .liveness import Alive, LivenessProbe, Offer, Probe
from .log_budget import LogBudget, suppressed_note
from .schedule import FloodDue, FloodSchedule
from .solicit import Solicit, SolicitBackoff

LOG = logging.getLogger("acpd.discovery")
AN_PROXY = "AN_Proxy"
PROXY_TTL_MS = 180_000
# Nothing reads DULL's flood cache (floods reach us as callbacks); a small one stays cheap
# when every flood of a spoofing host carries a new locator.
DULL_FLOOD_CACHE = 64
# DULL floods are never relayed (loop count 1): the seen pairs only drop a flood read twice
# (a watched neighbour's socket and the link's get the same datagram, at once). The engine's
# default (16384 pairs for the ACP's relaying) is about 5 MB of RSS once a spoofing host has
# filled it with one new pair per flood; 2048 is a quarter of a second at 8000 floods a second.
DULL_SEEN_PAIRS = 2048
# AN_Proxy has no period in RFC 8995 (ACP-DIGEST D.3 [unspecified]). A pledge of ours asks for
# it when its link comes up (solicit.py) and is answered at once; another implementation's
# pledge only listens, and waits up to one period: 10 s keeps zero-touch enrolment quick at the
# price of one small multicast per link every 10 s, and only while a registrar is known.
PROXY_INTERVAL = 10.0
# A link whose table evicted an entry this recently is under pressure (more newcomers than
# room: a flood of spoofed locators, or a very crowded segment): unconfirmed newcomers there
# wait for their confirmation (an echo answer, within about a second) before the channels
# part hears of them.
PRESSURE_HOLD_S = 10.0
# A newcomer may have missed our last flood (it was not listening yet): we answer one at once,
# at most once a second per link. On a link under pressure every second brings newcomers, and
# a flood of spoofed datagrams drops most of everyone's floods on the way (a bridge port
# overrun: in the lab nine in ten); answering five times a second there gives a real
# newcomer, whose own answers to us face the same odds, five chances a second to be heard
# and to hear us (issue 15: one flood a second took 10-45 s to get through).
ANSWER_GAP_S = 1.0
ANSWER_GAP_UNDER_PRESSURE_S = 0.2


class DiscoveryPart(Part):
    name = "discovery"

    def __init__(self, ctx: NodeContext, interval: float | None = None,
                 proxy_interval: float = PROXY_INTERVAL, limits: Limits | None = None) -> None:
        self.ctx = ctx
        self.interval = float(interval if interval is not None else ctx.config.discovery_interval)
        self.proxy_interval = proxy_interval
        self.ttl_ms = int(self.interval * 3500)  # RFC 8994 §6.4: 3.5 periods (210 s for 60 s)
        self.table = AdjacencyTable(limits or Limits.for_interval(self.interval))
        self.links: dict[str, str] = {}       # DULL ifname → our link-local on it
        self.ifindex: dict[str, int] = {}     # DULL ifname → its index (the echo's scope)
        self.liveness = LivenessProbe()
        self._echo: EchoSocket | None = None
        self._probe_timer: CoreTimer[Probe | Alive] | None = None
        self.floods_sent = 0
        self.own_floods_ignored = 0
        self.drops = dict.fromkeys((UNUSABLE_LOCATOR, LOCATOR_MISMATCH, BAD_METHOD), 0)
        self._watching: set[asyncio.Task[None]] = set()
        self._logs = LogBudget()
        self._answered: dict[str, float] = {}
        self._pressure: dict[str, float] = {}   # ifname → when its table last evicted
        self._held: dict[tuple[str, str], events.AdjacencyUp] = {}  # (peer, ifname) → its Up
        self._announced: set[tuple[str, str]] = set()   # what the bus has heard AdjacencyUp of
        self.held_total = 0
        self.proxies: dict[str, tuple[str, int]] = {}   # ifname → our join proxy's locator
        self.solicit = SolicitBackoff()                 # a pledge's AN_Proxy solicitations
        self._solicit_timer: CoreTimer[Solicit] | None = None
        self._solicited: dict[str, float] = {}          # ifname → when we last answered one
        self.solicitations_answered = 0
        self.grasp: Any = None
        self._asa: Any = None
        self._floods: CoreTimer[FloodDue] | None = None   # the periodic floods (schedule.py)
        self._timer: CoreTimer[events.AdjacencyDown] | None = None   # the table's expiry
        ctx.bus.subscribe(events.LinkAdopted, self._link_up)
        ctx.bus.subscribe(events.LinkReleased, self._link_down)
        ctx.bus.subscribe(AnProxyStart, self._proxy_start)
        ctx.bus.subscribe(AnProxyStop, self._proxy_stop)
        ctx.bus.subscribe(events.ChannelUp, self._channel_up)
        ctx.control.register("neighbors", lambda req: self._neighbors())

    @property
    def flooding(self) -> bool:
        return self.ctx.identity is not None

    async def start(self) -> None:
        self.grasp = GraspService(namespace=self.ctx.dull_ns, mode="dull",
                                  config=EngineConfig(max_flood_entries=DULL_FLOOD_CACHE,
                                                      max_seen=DULL_SEEN_PAIRS))
        await self.grasp.start()
        self._asa = self.grasp.register_asa("acpd")
        self.grasp.on_flood(AN_ACP, self._heard)
        self.grasp.on_flood(AN_PROXY, self._heard_proxy)
        self.grasp.on_discovery(AN_PROXY, self._proxy_solicited)
        self._solicit_timer = CoreTimer(self.solicit, self._solicit_out, name="proxy solicit")
        self._timer = CoreTimer(self.table, self._expired, name="adjacency expiry")
        self._probe_timer = CoreTimer(self.liveness, self._liveness_out, name="liveness probe")
        echo = EchoSocket(self.ctx.dull_ns, self._echo_reply)
        try:
            await echo.open()
            self._echo = echo
        except OSError as exc:  # no raw sockets: discovery works, without the liveness test
            LOG.warning("no liveness probe (ICMPv6 socket in %s: %s)", self.ctx.dull_ns, exc)
        for ifname in list(self.links):
            await self._add(ifname)
        schedule = FloodSchedule({AN_ACP: self.interval, AN_PROXY: self.proxy_interval}, _now())
        self._floods = CoreTimer(schedule, self._floods_due, name="periodic floods")
        self._floods.rearm()

    async def stop(self) -> None:
        if self._floods is not None:
            self._floods.close()
            self._floods = None
        if self._solicit_timer is not None:
            self._solicit_timer.close()
            self._solicit_timer = None
        self.solicit.stop()
        for task in list(self._watching):
            task.cancel()
        for task in list(self._watching):
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._probe_timer is not None:
            self._probe_timer.close()
            self._probe_timer = None
        if self._echo is not None:
            self._echo.close()
            self._echo = None
        now = _now()
        for event in self.table.clear():
            self._publish(event, now)
        if self.grasp is not None:
            await self.grasp.stop()
            self.grasp = None

    # -- links -------------------------------------------------------------------------
    def _link_up(self, event: events.LinkAdopted) -> None:
        self.links[event.dull_ifname] = event.link_local
        self.ifindex[event.dull_ifname] = event.dull_ifindex
        if self.grasp is not None:
            asyncio.get_running_loop().create_task(self._add(event.dull_ifname))

    def _link_down(self, event: events.LinkReleased) -> None:
        self.links.pop(event.dull_ifname, None)
        self.ifindex.pop(event.dull_ifname, None)
        self.liveness.forget(event.dull_ifname)
        self.solicit.link_down(event.dull_ifname)
        self._solicited.pop(event.dull_ifname, None)
        if self.grasp is not None:
            self.grasp.remove_interface(event.dull_ifname)
        now = _now()
        for down in self.table.drop_interface(event.dull_ifname):
            self._publish(down, now)

    async def _add(self, ifname: str) -> None:
        try:
            await self.grasp.add_interface(ifname)
        except (OSError, TimeoutError) as exc:
            LOG.error("DULL GRASP on %s: %s", ifname, exc)
            return
        self._flood(ifname)  # at once, not only at the next period
        self._flood_proxy(ifname)
        if not self.flooding and self._solicit_timer is not None:  # a pledge: ask for a proxy
            self._solicit_timer.feed(self.solicit.link_up(ifname, _now()))

    # -- floods out --------------------------------------------------------------------
    def _flood(self, ifname: str) -> None:
        address = self.links.get(ifname)
        if not self.flooding or address is None or self.grasp is None:
            return
        try:
            self.grasp.flood(self._asa, ttl_ms=self.ttl_ms, items=[our_flood(address)],
                             ifname=ifname)
            self.floods_sent += 1
        except (OSError, GraspApiError) as exc:
            LOG.warning("AN_ACP flood on %s failed: %s", ifname, exc)

    def _proxy_start(self, event: AnProxyStart) -> None:
        self.proxies[event.dull_ifname] = (event.address, event.port)
        self._flood_proxy(event.dull_ifname)

    def _proxy_stop(self, event: AnProxyStop) -> None:
        self.proxies.pop(event.dull_ifname, None)

    def _flood_proxy(self, ifname: str) -> None:
        """AN_Proxy (RFC 8995 §4.1.1) for our join proxy on this link, while it serves it."""
        locator = self.proxies.get(ifname)
        if locator is None or self.grasp is None or ifname not in self.grasp.interfaces:
            return
        try:
            self.grasp.flood(self._asa, ttl_ms=PROXY_TTL_MS, items=[_an_proxy(*locator)],
                             ifname=ifname)
        except (OSError, GraspApiError) as exc:
            LOG.warning("AN_Proxy flood on %s failed: %s", ifname, exc)

    def _proxy_solicited(self, event: Any) -> None:
        """A pledge's M_DISCOVERY for AN_Proxy: flood ours on that link now, if our join proxy
        serves it (at most once a second per link: a solicitation costs one flood at most)."""
        ifname = event.ifname
        if ifname not in self.proxies:
            return
        now = _now()
        if now - self._solicited.get(ifname, -1e18) < 1.0:
            return
        self._solicited[ifname] = now
        self.solicitations_answered += 1
        self._flood_proxy(ifname)
        self.ctx.bus.publish(PledgeSolicited(ifname))

    def _solicit_out(self, outputs: Sequence[Solicit]) -> None:
        """The solicitation back-off's timer (and a link's first): M_DISCOVERY for AN_Proxy."""
        if self.flooding or self.grasp is None:
            self.solicit.stop()   # enrolled meanwhile: nothing more to ask for
            return
        for out in outputs:
            if out.ifname not in self.grasp.interfaces:
                continue
            try:
                self.grasp.solicit(self._asa, _AN_PROXY_SOLICIT, ifname=out.ifname)
            except (OSError, GraspApiError) as exc:
                LOG.warning("AN_Proxy solicitation on %s failed: %s", out.ifname, exc)

    def _floods_due(self, due: Sequence[FloodDue]) -> None:
        """The schedule's timer: AN_ACP on every link, AN_Proxy where our join proxy serves."""
        for flood in due:
            if flood.objective == AN_ACP:
                for ifname in list(self.links):
                    self._flood(ifname)
            else:
                for ifname in list(self.proxies):
                    self._flood_proxy(ifname)

    def _heard_proxy(self, flood: Any) -> None:
        """A join proxy near us (we pledge while we have no LDevID): tell the pledge."""
        address, port = _locator_address(flood, c.IPPROTO_TCP)
        if address is None or address in self.links.values():
            return
        self.ctx.bus.publish(events.ProxyHeard(address, port, flood.ifname))

    # -- floods in ---------------------------------------------------------------------
    def _heard(self, flood: FloodReceived) -> None:
        now = _now()
        offer = read_offer(flood)
        if isinstance(offer, Refused):
            self._drop(offer, flood.ifname, now)
            return
        if offer.peer in self.links.values():
            self.own_floods_ignored += 1  # two of our twins share a segment
            return
        table_events = self.table.heard(offer.peer, flood.ifname, offer.methods, offer.port,
                                        flood.ttl_ms, now)
        if any(isinstance(e, events.AdjacencyDown) for e in table_events):
            self._pressure[flood.ifname] = now   # an eviction made room for a newcomer
        pressed = now - self._pressure.get(flood.ifname, -1e18) < PRESSURE_HOLD_S
        gap = ANSWER_GAP_UNDER_PRESSURE_S if pressed else ANSWER_GAP_S
        for event in table_events:
            self._publish(event, now)
            if (isinstance(event, events.AdjacencyUp)
                    and now - self._answered.get(flood.ifname, -1e18) >= gap):
                self._answered[flood.ifname] = now
                self._flood(flood.ifname)
        if self._timer is not None:
            self._timer.rearm()   # a newcomer or a shorter ttl may expire sooner
        entry = self.table.entries.get((offer.peer, flood.ifname))
        if entry is not None and entry.confirmed is None and self._probe_timer is not None:
            self._probe_timer.feed(self.liveness.heard(
                flood.ifname, offer.peer, Offer(offer.methods, offer.port, flood.ttl_ms), now))

    # -- liveness ----------------------------------------------------------------------
    def _liveness_out(self, outputs: Sequence[Probe | Alive]) -> None:
        now = _now()
        for out in outputs:
            if isinstance(out, Alive):
                self._alive(out, now)
                continue
            index = self.ifindex.get(out.ifname)
            if index is not None and self._echo is not None:
                self._echo.probe(index)

    def _echo_reply(self, source: str, ifindex: int) -> None:
        ifname = next((n for n, i in self.ifindex.items() if i == ifindex), None)
        if ifname is None:
            return
        now = _now()
        for alive in self.liveness.answered(ifname, source, now):
            self._alive(alive, now)

    def _alive(self, alive: Alive, now: float) -> None:
        """A recent AN_ACP source answered: (re)admit it, confirm it, tell the channels."""
        offer = alive.offer
        if (alive.peer, alive.ifname) not in self.table.entries:  # evicted meanwhile
            for event in self.table.heard(alive.peer, alive.ifname, offer.methods, offer.port,
                                          offer.ttl_ms, now):
                self._publish(event, now)
        confirmed = self.table.confirm(alive.peer, alive.ifname, BY_ANSWER)
        if confirmed is not None:
            self._publish(confirmed, now)
        entry = self.table.entries.get((alive.peer, alive.ifname))
        if entry is None or entry.confirmed in (None, BY_CHANNEL):
            return  # refused (the link's quota of answered entries is full), or has a channel
        self.ctx.bus.publish(events.AdjacencyAlive(alive.peer, alive.ifname))
        if self._timer is not None:
            self._timer.rearm()

    def _drop(self, refused: Refused, ifname: str, now: float) -> None:
        self.drops[refused.reason] += 1
        suppressed = self._logs.allow(refused.reason, now)
        if suppressed is not None:
            LOG.warning("AN_ACP on %s dropped (%s): %s%s", ifname, refused.reason,
                        refused.detail, suppressed_note(suppressed))

    def _channel_up(self, event: events.ChannelUp) -> None:
        confirmed = self.table.confirm(event.peer, event.dull_ifname)
        if confirmed is not None:
            self._publish(confirmed, _now())

    def _publish(self, event: Any, now: float) -> None:
        """Table events out: bus events published, confirmations and removals also change
        which neighbours have a socket of their own; log lines within their budget."""
        if isinstance(event, Confirmed):
            LOG.info("neighbour %s on %s confirmed (%s)", event.peer, event.ifname, event.how)
            if self.grasp is not None:
                task = asyncio.get_running_loop().create_task(self._watch(event.ifname, event.peer))
                self._watching.add(task)
                task.add_done_callback(self._watching.discard)
            held = self._held.pop((event.peer, event.ifname), None)
            if held is not None:   # confirmed while held back: the channels hear of it now
                self._announced.add((event.peer, event.ifname))
                self.ctx.bus.publish(held)
            return
        if isinstance(event, events.AdjacencyUp):
            key = (event.peer, event.dull_ifname)
            entry = self.table.entries.get(key)
            if (key not in self._announced and entry is not None and entry.confirmed is None
                    and now - self._pressure.get(event.dull_ifname, -1e18) < PRESSURE_HOLD_S):
                self._held[key] = event
                self.held_total += 1
                return
            self._held.pop(key, None)
            self._announced.add(key)
            suppressed = self._logs.allow("up:" + event.dull_ifname, now)
            if suppressed is not None:
                LOG.info("neighbour %s on %s (%s)%s", event.peer, event.dull_ifname,
                         ",".join(event.methods), suppressed_note(suppressed))
        elif isinstance(event, events.AdjacencyDown):
            key = (event.peer, event.dull_ifname)
            self._held.pop(key, None)
            if key not in self._announced:
                return   # never announced (held back): nothing to withdraw
            self._announced.discard(key)
            if self.grasp is not None:
                self.grasp.unwatch_peer(event.dull_ifname, event.peer)
            suppressed = self._logs.allow("down:" + event.dull_ifname, now)
            if suppressed is not None:
                LOG.info("neighbour %s on %s gone (expired, evicted or link down)%s", event.peer,
                         event.dull_ifname, suppressed_note(suppressed))
        self.ctx.bus.publish(event)

    async def _watch(self, ifname: str, peer: str) -> None:
        grasp = self.grasp
        try:
            watched = await grasp.watch_peer(ifname, peer)
        except OSError as exc:
            LOG.warning("no socket of its own for neighbour %s on %s: %s", peer, ifname, exc)
            return
        if watched and (peer, ifname) not in self.table.entries:  # gone meanwhile
            grasp.unwatch_peer(ifname, peer)

    def _expired(self, downs: Sequence[events.AdjacencyDown]) -> None:
        """The table's timer: neighbours not heard within their ttl."""
        now = _now()
        for down in downs:
            self._publish(down, now)

    def _neighbors(self) -> list[dict[str, Any]]:
        now = _now()
        return self.table.to_list(now, time.time() - now)

    def status(self) -> dict[str, Any]:
        table = self.table
        now = _now()
        return {"flooding": self.flooding, "floods_sent": self.floods_sent,
                "interval_s": self.interval,
                "neighbors": self._neighbors(), "own_floods_ignored": self.own_floods_ignored,
                "unusable_floods": self.drops[UNUSABLE_LOCATOR],
                "announcing_proxy": sorted(self.proxies),
                "proxy_solicitations": {"sent": self.solicit.counters["solicitations"],
                                        "answered": self.solicitations_answered},
                "table_full_drops": table.counters["table_full_drops"],
                "drops": {**self.drops,
                          "interface_full": table.counters["interface_full_drops"],
                          "table_full": table.counters["table_full_drops"]},
                "held": {"now": len(self._held), "total": self.held_total,
                         "links_under_pressure": sorted(
                             n for n, t in self._pressure.items()
                             if now - t < PRESSURE_HOLD_S)},
                "liveness": {**self.liveness.status(),
                             **(self._echo.counters if self._echo is not None else {})},
                "table": {"entries": len(table.entries), "confirmed": table.confirmed_count(),
                          "evicted": table.counters["evicted"],
                          "ttl_capped": table.counters["ttl_capped"],
                          "reheard_refused": table.counters["reheard_refused"],
                          "limits": dataclasses.asdict(table.limits)},
                "grasp": self.grasp.status() if self.grasp is not None else None}


def _now() -> float:
    """The table's clock: the running loop's (monotonic) time, as CoreTimer's."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:   # no loop (a status read outside acpd): the same monotonic clock
        return time.monotonic()


# what a pledge's M_DISCOVERY asks for (RFC 8990 §2.10: no value, discovery and synchronization)
_AN_PROXY_SOLICIT = Objective(AN_PROXY, c.F_DISC | c.F_SYNCH, 1)


def _an_proxy(address: str, port: int) -> tuple[Objective, Locator]:
    """AN_Proxy (RFC 8995 §4.1.1): ["AN_Proxy", 4, 1, ""] with the proxy's TCP locator."""
    return (Objective(AN_PROXY, c.F_SYNCH, 1, ""),
            Locator(c.O_IPv6_LOCATOR, ipaddress.IPv6Address(address).packed, c.IPPROTO_TCP, port))


def _locator_address(flood: Any, protocol: int) -> tuple[str | None, int]:
    """The IPv6 link-local locator of a heard flood, or (None, 0) if it has none we can use."""
    loc = flood.locator
    if (loc is None or loc.kind != c.O_IPv6_LOCATOR or loc.protocol != protocol
            or not isinstance(loc.address, bytes) or loc.port is None):
        return None, 0
    address = ipaddress.IPv6Address(loc.address)
    if not address.is_link_local:
        return None, 0
    return str(address), int(loc.port)

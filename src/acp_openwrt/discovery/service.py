"""acpd's DULL discovery: flood AN_ACP on every DULL link, hear others', keep the adjacency table.

RFC 8994 §6.4: with a valid LDevID the node floods ["AN_ACP", 4, 1, "IKEv2"] with an IPv6
locator (its link-local on that link, UDP 500) on every DULL interface, at once when the link
gets its address and every 60 s (ttl 210000 ms) with jitter. Without an LDevID it floods
nothing (it is a pledge), but it still listens, so `acpctl neighbors` shows what is around.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from typing import Any

from .. import events
from ..brski.proxy_events import AnProxyStart, AnProxyStop
from ..grasp import constants as c
from ..grasp.errors import GraspApiError
from ..grasp.messages import Locator, Objective
from ..grasp.service import GraspService
from ..node_context import NodeContext
from .adjacency import AdjacencyTable

LOG = logging.getLogger("acpd.discovery")
AN_ACP = "AN_ACP"
AN_PROXY = "AN_Proxy"
PROXY_TTL_MS = 180_000
FLOOD_INTERVAL = 60.0
FLOOD_TTL_MS = 210_000
# AN_Proxy has no period in RFC 8995 (ACP-DIGEST D.3 [unspecified]). A pledge sends nothing we
# could answer, so it waits up to one period to find a proxy: 10 s keeps zero-touch enrolment
# quick at the price of one small multicast per link every 10 s, and only while a registrar is known.
PROXY_INTERVAL = 10.0
JITTER = 0.1          # ±10 % on every periodic flood, so neighbours do not synchronise
IKE_PORT = 500


class DullDiscovery:
    name = "discovery"

    def __init__(self, ctx: NodeContext, interval: float = FLOOD_INTERVAL,
                 ttl_ms: int = FLOOD_TTL_MS, proxy_interval: float = PROXY_INTERVAL) -> None:
        self.ctx = ctx
        self.interval = interval
        self.proxy_interval = proxy_interval
        self.ttl_ms = ttl_ms
        self.table = AdjacencyTable()
        self.links: dict[str, str] = {}       # DULL ifname → our link-local on it
        self.floods_sent = 0
        self.own_floods_ignored = 0
        self.unusable_floods = 0
        self._answered: dict[str, float] = {}
        self.proxies: dict[str, tuple[str, int]] = {}   # ifname → our join proxy's locator
        self.grasp: Any = None
        self._asa: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._expiry = asyncio.Event()
        ctx.bus.subscribe(events.LinkAdopted, self._link_up)
        ctx.bus.subscribe(events.LinkReleased, self._link_down)
        ctx.bus.subscribe(AnProxyStart, self._proxy_start)
        ctx.bus.subscribe(AnProxyStop, lambda ev: self.proxies.pop(ev.dull_ifname, None))
        ctx.control.register("neighbors", lambda req: self.table.to_list())

    @property
    def flooding(self) -> bool:
        return self.ctx.identity is not None

    async def start(self) -> None:
        self.grasp = GraspService(namespace=self.ctx.dull_ns, mode="dull")
        await self.grasp.start()
        self._asa = self.grasp.register_asa("acpd")
        self.grasp.on_flood(AN_ACP, self._heard)
        self.grasp.on_flood(AN_PROXY, self._heard_proxy)
        for ifname in list(self.links):
            await self._add(ifname)
        self._tasks = [asyncio.create_task(self._periodic(), name="an-acp-flood"),
                       asyncio.create_task(self._periodic_proxy(), name="an-proxy-flood"),
                       asyncio.create_task(self._expire(), name="adjacency-expiry")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        for event in self.table.clear():
            self.ctx.bus.publish(event)
        if self.grasp is not None:
            await self.grasp.stop()
            self.grasp = None

    # -- links -------------------------------------------------------------------------
    def _link_up(self, event: events.LinkAdopted) -> None:
        self.links[event.dull_ifname] = event.link_local
        if self.grasp is not None:
            asyncio.get_running_loop().create_task(self._add(event.dull_ifname))

    def _link_down(self, event: events.LinkReleased) -> None:
        self.links.pop(event.dull_ifname, None)
        if self.grasp is not None:
            self.grasp.remove_interface(event.dull_ifname)
        for down in self.table.drop_interface(event.dull_ifname):
            self.ctx.bus.publish(down)

    async def _add(self, ifname: str) -> None:
        try:
            await self.grasp.add_interface(ifname)
        except (OSError, TimeoutError) as exc:
            LOG.error("DULL GRASP on %s: %s", ifname, exc)
            return
        self._flood(ifname)  # at once, not only at the next period
        self._flood_proxy(ifname)

    # -- floods out --------------------------------------------------------------------
    def _flood(self, ifname: str) -> None:
        address = self.links.get(ifname)
        if not self.flooding or address is None or self.grasp is None:
            return
        try:
            self.grasp.flood(self._asa, ttl_ms=self.ttl_ms, items=[_an_acp(address)], ifname=ifname)
            self.floods_sent += 1
        except (OSError, GraspApiError) as exc:
            LOG.warning("AN_ACP flood on %s failed: %s", ifname, exc)

    def _proxy_start(self, event: AnProxyStart) -> None:
        self.proxies[event.dull_ifname] = (event.address, event.port)
        self._flood_proxy(event.dull_ifname)

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

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(1 - JITTER, 1 + JITTER))
            for ifname in list(self.links):
                self._flood(ifname)

    async def _periodic_proxy(self) -> None:
        while True:
            await asyncio.sleep(self.proxy_interval * random.uniform(1 - JITTER, 1 + JITTER))
            for ifname in list(self.proxies):
                self._flood_proxy(ifname)

    def _heard_proxy(self, flood: Any) -> None:
        """A join proxy near us (we pledge while we have no LDevID): tell the pledge."""
        address, port = _locator_address(flood, c.IPPROTO_TCP)
        if address is None or address in self.links.values():
            return
        self.ctx.bus.publish(events.ProxyHeard(address, port, flood.ifname))

    # -- floods in ---------------------------------------------------------------------
    def _heard(self, flood: Any) -> None:
        peer, port = _locator_address(flood, c.IPPROTO_UDP)
        if peer is None:
            self.unusable_floods += 1
            return
        if peer in self.links.values():
            self.own_floods_ignored += 1  # two of our twins share a segment
            return
        methods = _methods(flood)
        ttl_s = max(flood.expires - time.monotonic(), 1.0)
        now = time.monotonic()
        for up in self.table.heard(peer, flood.ifname, methods, port, ttl_s, now):
            LOG.info("neighbour %s on %s (%s)", up.peer, up.dull_ifname, ",".join(methods))
            self.ctx.bus.publish(up)
            # A newcomer may have missed our last flood (it was not listening yet): answer at
            # once rather than in up to 66 s, but at most once a second per link.
            if now - self._answered.get(flood.ifname, -1.0) >= 1.0:
                self._answered[flood.ifname] = now
                self._flood(flood.ifname)
        self._expiry.set()

    async def _expire(self) -> None:
        while True:
            due = self.table.next_expiry()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            self._expiry.clear()
            try:
                await asyncio.wait_for(self._expiry.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            for down in self.table.expire(time.monotonic()):
                LOG.info("neighbour %s on %s expired", down.peer, down.dull_ifname)
                self.ctx.bus.publish(down)

    def status(self) -> dict[str, Any]:
        return {"flooding": self.flooding, "floods_sent": self.floods_sent,
                "neighbors": self.table.to_list(), "own_floods_ignored": self.own_floods_ignored,
                "unusable_floods": self.unusable_floods,
                "announcing_proxy": sorted(self.proxies),
                "table_full_drops": self.table.full_drops,
                "grasp": self.grasp.status() if self.grasp is not None else None}


def _an_acp(link_local: str) -> tuple[Objective, Locator]:
    """Our AN_ACP flood on one link (RFC 8994 §6.4): ["AN_ACP", 4, 1, "IKEv2"] and
    [O_IPv6_LOCATOR, <link-local>, UDP, 500]."""
    return (Objective(AN_ACP, c.F_SYNCH, 1, "IKEv2"),
            Locator(c.O_IPv6_LOCATOR, ipaddress.IPv6Address(link_local).packed, c.IPPROTO_UDP,
                    IKE_PORT))


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


def _methods(flood: Any) -> tuple[str, ...]:
    """RFC 8994 §6.4: the objective value names the channel method ("IKEv2", "DTLS", ...)."""
    value = flood.objective.value
    return (value,) if isinstance(value, str) and value else ()

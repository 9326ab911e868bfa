"""acpd's ACP GRASP: the full GRASP instance inside the ACP namespace (RFC 8994 §6.9).

It runs only on secure-channel interfaces (ChannelUp/ChannelDown), never on DULL links or ACP
connect interfaces, with the node's ACP address as its own locator and the RFC 8991-style local
API on `run_dir/grasp.sock` for ASAs. It provides the `acp_grasp` port (`AcpGraspPort`: acpd's
own ASAs, the registrar, use its ASA API; the pledge part asks it for an EST server), and
publishes what it hears for the other parts:
- `RegistrarHeard` for an AN_join_registrar naming EST-TLS (RFC 8995 §4.3; the join proxy);
- `EstServerHeard` for SRV.est and AN_join_registrar (RFC 8994 §6.2.5.1; the pledge part renews
  the LDevID there). A registrar is an EST server, so its AN_join_registrar is taken as one
  too: this interoperates with registrars that announce only AN_join_registrar.

A node that joins the ACP would otherwise wait up to a flood period (60 s) per hop to learn the
registrar. So when a channel interface comes up, this node repeats on it the AN_join_registrar
and SRV.est floods it holds in its cache, with their remaining ttl, as floods of its own (the
locators still name the registrar; receivers use the locator, not the initiator), and publishes
`AcpGraspInterfaceUp` so that parts that announce something themselves (the registrar) do.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .. import events
from ..brski.proxy.registrars import registrar_from_flood
from ..node_context import NodeContext, Part, Ports
from . import constants as c
from .actions import FloodReceived
from .asa_api import AsaApi
from .errors import GraspApiError
from .messages import Locator, Objective
from .service import GraspService

LOG = logging.getLogger("acpd.grasp")
AN_JOIN_REGISTRAR = "AN_join_registrar"
SRV_EST = "SRV.est"
API_SOCKET_NAME = "grasp.sock"
DISCOVERY_TIMEOUT_MS = 3000
# A new channel's registrar discovery, retried while none is known: the first can reach the
# neighbour before its GRASP joined the channel interface and be lost (the lab saw a node wait
# 38 s for the registrar's next flood that way). Each try waits its timeout for answers.
DISCOVERY_TRIES_MS = (1000, 2000, 4000, 8000)
DISCOVERED_TTL_MS = 180_000  # as long as an AN_join_registrar flood would have lasted
MAX_TTL_MS = 2**32 - 1       # the longest ttl the join proxy's handover carries


def tcp_locator(loc: Locator | None) -> tuple[str, int] | None:
    """(address, port) of an IPv6/TCP locator, or None if it is not a usable one."""
    if loc is None or len(loc) < 4 or loc[0] != c.O_IPv6_LOCATOR or loc[2] != c.IPPROTO_TCP:
        return None
    address, port = loc[1], loc[3]
    if not isinstance(address, bytes) or len(address) != 16 or not isinstance(port, int) \
            or not 0 < port < 65536:
        return None
    return str(ipaddress.IPv6Address(address)), port


def registrar_heard(flood: FloodReceived, now: float) -> events.RegistrarHeard | None:
    """The RegistrarHeard event of an AN_join_registrar flood received at `now` (the engine's
    monotonic clock), None unless it names a usable EST-TLS registrar (an IPv6/TCP locator,
    a routable address) that has not expired. GRASP ttl 0 ("forever") becomes MAX_TTL_MS."""
    locator = registrar_from_flood(flood.objective.name, flood.objective.value, flood.locator)
    if locator is None:
        return None
    ttl_ms = MAX_TTL_MS if math.isinf(flood.expires) else int((flood.expires - now) * 1000)
    if ttl_ms <= 0:
        return None
    return events.RegistrarHeard(locator.address, locator.port, min(ttl_ms, MAX_TTL_MS))


class AcpGraspPart(Part):
    """The ACP GRASP part; `grasp` is the running GraspService (None before start)."""
    name = "grasp"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.grasp: GraspService | None = None
        self.interfaces: set[str] = set()
        self.est_servers_heard = 0
        self.est_server: tuple[str, int] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._asa: Any = None
        self.floods_repeated = 0
        self.registrars_discovered = 0
        self._discovered: dict[tuple[str, int], float] = {}  # registrar -> until (monotonic)
        self._discovering: asyncio.Task[None] | None = None

    def ports(self) -> Ports:
        return Ports(acp_grasp=self)

    def asa_api(self) -> AsaApi | None:
        """The ASA API of the running ACP GRASP (AcpGraspPort); None before start."""
        return self.grasp

    async def start(self) -> None:
        identity = self.ctx.identity or {}
        grasp = GraspService(namespace=self.ctx.acp_ns, mode="acp",
                             address=identity.get("acp_address"),
                             api_path=str(self.ctx.run_dir / API_SOCKET_NAME))
        await grasp.start()
        self.grasp = grasp
        self._asa = grasp.register_asa("acpd-relay")
        bus = self.ctx.bus
        self._unsubscribe = [
            bus.subscribe(events.ChannelUp, self._channel_up),
            bus.subscribe(events.ChannelDown, self._channel_down),
            grasp.on_flood(AN_JOIN_REGISTRAR, self._heard_registrar),
            grasp.on_flood(SRV_EST, self._heard_est)]

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for task in list(self._tasks):
            task.cancel()
        if self.grasp is not None:
            await self.grasp.stop()
            self.grasp = None
        self.interfaces.clear()

    def status(self) -> dict[str, Any]:
        if self.grasp is None:
            return {"running": False}
        out = self.grasp.status()
        out["running"] = True
        out["est_servers_heard"] = self.est_servers_heard
        out["floods_repeated"] = self.floods_repeated
        out["registrars_discovered"] = self.registrars_discovered
        return out

    # -- channels ------------------------------------------------------------------------
    def _channel_up(self, event: events.ChannelUp) -> None:
        self.interfaces.add(event.acp_ifname)
        self._spawn_add(event.acp_ifname)

    def _spawn_add(self, ifname: str) -> None:
        task = asyncio.get_running_loop().create_task(self._add(ifname))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add(self, ifname: str) -> None:
        if self.grasp is None or ifname not in self.interfaces:
            return
        try:
            await self.grasp.add_interface(ifname)
            LOG.info("ACP GRASP on %s", ifname)
        except (OSError, TimeoutError) as exc:
            LOG.error("ACP GRASP on %s: %s", ifname, exc)
            return
        self._repeat_floods(ifname)
        self.ctx.bus.publish(events.AcpGraspInterfaceUp(ifname))
        if not self._registrar_known() and (self._discovering is None
                                            or self._discovering.done()):
            self._discovering = asyncio.get_running_loop().create_task(
                self._discover_until_known(), name="registrar discovery")
            self._tasks.add(self._discovering)
            self._discovering.add_done_callback(self._tasks.discard)

    def _registrar_known(self) -> bool:
        """A registrar flood or discovery answer held, or the registrar runs here (its
        objective is registered with this GRASP: a node never hears its own floods)."""
        now = time.monotonic()
        grasp = self.grasp
        if grasp is not None and (grasp.get_flood(self._asa, AN_JOIN_REGISTRAR)
                                  or grasp.discoverable(AN_JOIN_REGISTRAR)):
            return True
        return any(until > now for until in self._discovered.values())

    async def _discover_until_known(self) -> None:
        """No registrar heard yet: ask (M_DISCOVERY; RFC 8995 §4.3 has proxies support
        discovering registrars), again while none is known (DISCOVERY_TRIES_MS). A neighbour's
        repeated flood can race our joining ff02::13 on a new channel, and our discovery its
        joining: whichever side joins later gets through."""
        for timeout_ms in DISCOVERY_TRIES_MS:
            if self.grasp is None or not self.interfaces or self._registrar_known():
                return
            if await self._discover_registrar(timeout_ms):
                return

    async def _discover_registrar(self, timeout_ms: int = DISCOVERY_TIMEOUT_MS) -> bool:
        """One M_DISCOVERY for AN_join_registrar; True when a registrar answered."""
        assert self.grasp is not None
        objective = Objective(AN_JOIN_REGISTRAR, c.F_SYNCH, 255, "EST-TLS")
        try:
            # the first answer is enough: a registrar to relay to now, not after the timeout
            locators = await self.grasp.discover(self._asa, objective,
                                                 timeout_ms=timeout_ms, flush=True, first=True)
        except GraspApiError as exc:
            LOG.debug("discovering a registrar: %s", exc)
            return False
        answered = False
        for locator in locators:
            found = tcp_locator(locator)
            if found is not None:
                answered = True
                self.registrars_discovered += 1
                self._discovered[found] = time.monotonic() + DISCOVERED_TTL_MS / 1000
                self._registrar_found(found[0], found[1], DISCOVERED_TTL_MS)
        return answered

    def _repeat_floods(self, ifname: str) -> None:
        """The registrar's floods we hold, again on a new channel, for the new neighbour only:
        loop count 1, so it is not relayed on. (With the original loop count every new channel
        sent a new flood across the whole ACP: lab/sim measured cold-start GRASP traffic per
        node growing 21 -> 271 -> 680 messages from 10 to 300 nodes. A neighbour beyond the
        new one already has these floods, or gets them from its own new channel.)"""
        grasp = self.grasp
        if grasp is None:
            return
        now = time.monotonic()
        for name in (AN_JOIN_REGISTRAR, SRV_EST):
            for entry in grasp.get_flood(self._asa, name):
                ttl_ms = 0 if math.isinf(entry.expires) else int((entry.expires - now) * 1000)
                if ttl_ms <= 0 and not math.isinf(entry.expires):
                    continue
                try:
                    grasp.flood(self._asa, ttl_ms,
                                [(entry.objective._replace(loop_count=1), entry.locator)],
                                ifname=ifname)
                    self.floods_repeated += 1
                except (OSError, GraspApiError) as exc:
                    LOG.warning("repeating %s on %s: %s", name, ifname, exc)
        if grasp.get_flood(self._asa, AN_JOIN_REGISTRAR):
            return
        # learnt by discovery, not by flood (our own channel raced a repeat): announced the
        # same way, so the new neighbour need not win a race of its own
        for (address, port), until in list(self._discovered.items()):
            ttl_ms = int((until - now) * 1000)
            if ttl_ms <= 0:
                del self._discovered[(address, port)]
                continue
            locator = Locator(c.O_IPv6_LOCATOR, ipaddress.IPv6Address(address).packed,
                              c.IPPROTO_TCP, port)
            try:
                grasp.flood(self._asa, ttl_ms,
                            [(Objective(AN_JOIN_REGISTRAR, c.F_SYNCH, 1, "EST-TLS"), locator)],
                            ifname=ifname)
                self.floods_repeated += 1
            except (OSError, GraspApiError) as exc:
                LOG.warning("announcing a discovered registrar on %s: %s", ifname, exc)

    def _channel_down(self, event: events.ChannelDown) -> None:
        self.interfaces.discard(event.acp_ifname)
        if self.grasp is not None:
            self.grasp.remove_interface(event.acp_ifname)

    # -- floods heard ----------------------------------------------------------------------
    def _heard_registrar(self, flood: FloodReceived) -> None:
        heard = registrar_heard(flood, time.monotonic())
        if heard is not None:
            self.ctx.bus.publish(heard)
        self._heard_est(flood)

    def _heard_est(self, flood: FloodReceived) -> None:
        found = tcp_locator(flood.locator)
        if found is not None:
            self._est_server(*found)

    def _registrar_found(self, address: str, port: int, ttl_ms: int) -> None:
        self.ctx.bus.publish(events.RegistrarHeard(address, port, ttl_ms))
        self._est_server(address, port)

    async def find_est_server(self) -> tuple[str, int] | None:
        """The EST server last heard of, else one discovered now. The renewal part asks this:
        it may start (or be rebuilt) after the flood or discovery answer went by."""
        if self.est_server is None and self.grasp is not None and self.interfaces:
            await self._discover_registrar()
        return self.est_server

    def _est_server(self, address: str, port: int) -> None:
        self.est_servers_heard += 1
        self.est_server = (address, port)
        self.ctx.bus.publish(events.EstServerHeard(address, port))

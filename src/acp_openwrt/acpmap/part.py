"""The ACP map as an acpd part: answers for this node, and gathers the map when asked.

- **Answering**: through the ACP GRASP's ASA API (`ctx.acp_grasp`) it listens for M_REQ_SYN
  on `core.OBJECTIVE` (registered discoverable) with this node's report, refreshed when a
  channel comes up or goes down and every `REFRESH_S` (RPL rank and parent move on their own).
- **Gathering**: the control command `map` (acpctl map, ubus `acp map`) runs one
  `core.MapGatherer` from this node's report, seeded with the nodes its RPL routes lead to,
  carrying out each `Ask` as one GRASP synchronization with that ACP address. One gathering
  at a time: a `map` asked while one runs waits for it; a map younger than `CACHE_S` is
  answered again.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .. import events
from ..control.server import RequestError
from ..core import CoreTimer
from ..grasp import constants as c
from ..grasp.asa_api import Asa, AsaApi
from ..grasp.errors import GraspApiError
from ..grasp.messages import Locator, Objective
from ..node_context import NodeContext, Part
from .core import OBJECTIVE, Ask, Finished, Limits, MapGatherer, NodeReport, Output
from .report import build_report, peer_address, route_seeds

LOG = logging.getLogger("acpd.acpmap")
ASA_NAME = "acp-map"
REFRESH_S = 10.0   # the own report is refreshed at least this often
CACHE_S = 3.0      # a map this young is answered again rather than gathered anew
LOOP_COUNT = 6     # GRASP_DEF_LOOPCT: the request goes by TCP to the address anyway


class MapPart(Part):
    name = "acpmap"

    def __init__(self, ctx: NodeContext, limits: Limits | None = None) -> None:
        self.ctx = ctx
        self.limits = limits or Limits()
        ident = ctx.identity or {}
        self.address: str | None = ident.get("acp_address")
        self.node_name: str | None = ident.get("acp_node_name")
        self.channels: dict[str, str] = {}   # acp_ifname -> peer ACP address
        self._grasp: AsaApi | None = None
        self._asa: Asa | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._refresh: asyncio.TimerHandle | None = None
        self._gathering: asyncio.Future[dict[str, Any]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: tuple[float, dict[str, Any]] | None = None
        self.maps = 0
        bus = ctx.bus
        self._unsubscribe = [bus.subscribe(events.ChannelUp, self._channel_up),
                             bus.subscribe(events.ChannelDown, self._channel_down)]
        ctx.control.register("map", self._control)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        port = self.ctx.acp_grasp
        grasp = port.asa_api() if port is not None else None
        if grasp is None or self.address is None:
            LOG.warning("ACP map: no ACP GRASP or no ACP address: this node is not reported")
            return
        try:
            self._asa = grasp.register_asa(ASA_NAME)
            grasp.register_objective(self._asa, Objective(OBJECTIVE, c.F_SYNCH, LOOP_COUNT),
                                     discoverable=True)
        except GraspApiError as exc:
            LOG.error("ACP map: cannot register %s: %s", OBJECTIVE, exc)
            return
        self._grasp = grasp
        self._publish()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        for task in list(self._tasks):
            task.cancel()
        if self._gathering is not None and not self._gathering.done():
            self._gathering.set_exception(RequestError("acpd is stopping the ACP map"))
        if self._grasp is not None and self._asa is not None:
            try:
                self._grasp.deregister_asa(self._asa)
            except GraspApiError:
                pass
        self._grasp = self._asa = None

    def status(self) -> dict[str, Any]:
        return {"answering": self._grasp is not None, "objective": OBJECTIVE,
                "channels": len(self.channels), "maps": self.maps,
                "gathering": self._gathering is not None and not self._gathering.done()}

    # -- this node's report ----------------------------------------------------------------
    def report(self) -> NodeReport:
        assert self.address is not None
        rpl = self.ctx.rpl
        return build_report(address=self.address, node_name=self.node_name,
                            registrar=self.ctx.config.registrar,
                            root=self.ctx.config.dodag_root,
                            rpl=rpl.status() if rpl is not None else None,
                            channels=self.channels)

    def _publish(self) -> None:
        """Answer M_REQ_SYN with the current report (and again in REFRESH_S)."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if self._grasp is None or self._asa is None:
            return
        try:
            self._grasp.listen_synchronize(
                self._asa, Objective(OBJECTIVE, c.F_SYNCH, LOOP_COUNT, self.report().to_value()))
        except GraspApiError as exc:
            LOG.warning("ACP map: cannot answer for %s: %s", OBJECTIVE, exc)
        self._refresh = asyncio.get_running_loop().call_later(REFRESH_S, self._publish)

    def _channel_up(self, event: events.ChannelUp) -> None:
        peer = peer_address(event.peer_node_name)
        if peer is not None:
            self.channels[event.acp_ifname] = peer
            self._publish()

    def _channel_down(self, event: events.ChannelDown) -> None:
        if self.channels.pop(event.acp_ifname, None) is not None:
            self._publish()

    # -- the map ---------------------------------------------------------------------------
    async def _control(self, _request: dict[str, Any]) -> dict[str, Any]:
        if self.address is None:
            raise RequestError("no ACP address: this node has no map")
        loop = asyncio.get_running_loop()
        if self._last is not None and loop.time() - self._last[0] < CACHE_S:
            return self._last[1]
        if self._gathering is None or self._gathering.done():
            self._gathering = loop.create_future()
            self._spawn(self._gather(self._gathering))
        return await asyncio.shield(self._gathering)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _gather(self, result: asyncio.Future[dict[str, Any]]) -> None:
        try:
            answer = await self._gather_map()
        except Exception as exc:  # a bug: every waiter gets it rather than waiting forever
            if not result.done():
                result.set_exception(exc)
            raise
        if not result.done():
            result.set_result(answer)

    async def _gather_map(self) -> dict[str, Any]:
        rpl = self.ctx.rpl
        routes = (rpl.status().get("routes") or []) if rpl is not None else []
        assert self.address is not None
        gatherer = MapGatherer(self.report(), prefix=_domain_prefix(self.address),
                               seeds=route_seeds(routes, self.address), limits=self.limits)
        asks: dict[str, asyncio.Task[None]] = {}
        finished = asyncio.Event()
        timer: CoreTimer[Output]

        def execute(outputs: Sequence[Output]) -> None:
            for output in outputs:
                if isinstance(output, Ask):
                    asks[output.address] = asyncio.get_running_loop().create_task(
                        self._ask(output, gatherer, timer))
                elif isinstance(output, Finished):
                    finished.set()

        timer = CoreTimer(gatherer, execute, name="acpmap")
        try:
            timer.feed(gatherer.start(timer.now()))
            await finished.wait()
        finally:
            timer.close()
            for task in asks.values():
                task.cancel()
        answer = gatherer.result(timer.now())
        self.maps += 1
        self._last = (timer.now(), answer)
        LOG.info("ACP map: %d nodes, %d reached in %.1f s", len(answer["nodes"]),
                 sum(1 for n in answer["nodes"] if n["reached"]), answer["duration_s"])
        return answer

    async def _ask(self, ask: Ask, gatherer: MapGatherer, timer: CoreTimer[Output]) -> None:
        grasp, asa = self._grasp, self._asa
        if grasp is None or asa is None:
            timer.feed(gatherer.failed(ask.address, "no ACP GRASP", timer.now()))
            return
        locator = Locator(c.O_IPv6_LOCATOR, ipaddress.IPv6Address(ask.address).packed,
                          c.IPPROTO_TCP, c.GRASP_LISTEN_PORT)
        try:
            answer = await asyncio.wait_for(
                grasp.synchronize(asa, Objective(OBJECTIVE, c.F_SYNCH, LOOP_COUNT),
                                  locator, timeout_ms=int(ask.timeout * 1000)),
                ask.timeout + 0.5)
        except asyncio.CancelledError:
            raise
        except GraspApiError as exc:
            timer.feed(gatherer.failed(ask.address, _reason(exc), timer.now()))
            return
        except (OSError, TimeoutError) as exc:
            timer.feed(gatherer.failed(ask.address, type(exc).__name__, timer.now()))
            return
        timer.feed(gatherer.answered(ask.address, answer.value, timer.now()))


def _reason(exc: GraspApiError) -> str:
    return exc.code.name


def _domain_prefix(address: str) -> ipaddress.IPv6Network:
    """The ACP's ULA /48 (RFC 8994 §6.11.2): only addresses inside it are followed."""
    return ipaddress.IPv6Network(f"{address}/48", strict=False)

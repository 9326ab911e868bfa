"""acpd's link adoption: keeps DULL holding one twin per adoptable host link, live.

Reconcile-driven: netlink "doorbells" in the host and DULL namespaces, a `rescan` control
command and a slow periodic timer all just schedule a reconcile, which re-reads both
namespaces and applies links.plan's actions. So a missed event or a restart (twins found by
their alias) converges to the same state without duplicates.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import events
from ..netns import call_in
from ..node_context import NodeContext, Part
from . import netlink
from .netlink import NetlinkWorker
from .plan import Adopt, Release, RemoveStrayPort, Twin, plan

if TYPE_CHECKING:  # the control API's types: 2 MB of TypedDicts acpd needs no instance of
    from ..control.api import InterfaceEntry, LinksStatus, RescanAnswer

LOG = logging.getLogger("acpd.links")
RESCAN_INTERVAL = 30.0
DEBOUNCE = 0.05


@dataclass
class AdoptedLink:
    host_index: int
    host_name: str
    method: str
    dull_index: int
    dull_name: str
    link_local: str | None = None
    since: float = 0.0

    def to_dict(self) -> InterfaceEntry:
        return {"host_interface": self.host_name, "method": self.method,
                "dull_interface": self.dull_name, "link_local": self.link_local,
                "up_for_s": round(time.monotonic() - self.since, 1)}


class LinkPart(Part):
    """Adopt host links into DULL; publish LinkAdopted / LinkReleased; answer `interfaces`."""
    name = "links"

    def __init__(self, ctx: NodeContext, keep_on_stop: bool = False) -> None:
        self.ctx = ctx
        self.keep_on_stop = keep_on_stop
        self.adopted: dict[int, AdoptedLink] = {}
        self.errors: dict[str, str] = {}
        # ACP connect devices are never DULL twins (RFC 8994 §8.1)
        from ..connect.config import ignore_patterns
        self._ignored = ctx.config.ignore_interfaces + ignore_patterns(ctx.config.connect)
        self._host = NetlinkWorker(None, "host")
        self._dull = NetlinkWorker(ctx.dull_ns, "dull")
        self._bells: list[socket.socket] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reconciled = asyncio.Event()
        ctx.control.register("interfaces", self._interfaces)
        ctx.control.register("rescan", self._rescan)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._bells = [netlink.doorbell(netlink.RTMGRP_LINK),
                       call_in(self.ctx.dull_ns, netlink.doorbell,
                               netlink.RTMGRP_LINK | netlink.RTMGRP_IPV6_IFADDR)]
        for bell in self._bells:
            loop.add_reader(bell.fileno(), self._ring, bell)
        self._task = asyncio.create_task(self._loop(), name="links")
        await self.reconciled()

    async def reconciled(self) -> None:
        """Wait for the next completed reconcile."""
        self._reconciled.clear()
        self._wake.set()
        await self._reconciled.wait()

    def _ring(self, bell: socket.socket) -> None:
        try:
            while bell.recv(65536):
                pass
        except (BlockingIOError, OSError):
            pass
        self._wake.set()

    def _interfaces(self, _req: dict[str, Any]) -> list[InterfaceEntry]:
        return self.status()["interfaces"]

    async def _rescan(self, _req: dict[str, Any]) -> RescanAnswer:
        await self.reconciled()
        return {"interfaces": len(self.adopted)}

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), RESCAN_INTERVAL)
            except TimeoutError:
                pass
            await asyncio.sleep(DEBOUNCE)  # let a burst of netlink messages settle
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception as exc:  # keep watching: the next event or timer retries
                LOG.exception("reconcile failed: %s", exc)
            self._reconciled.set()

    async def reconcile(self) -> None:
        links = await self._host.run(netlink.host_links)
        twins = await self._dull.run(netlink.dull_twins)
        for action in plan(links, twins, self._ignored):
            try:
                if isinstance(action, Release):
                    await self._release(action.twin)
                elif isinstance(action, RemoveStrayPort):
                    LOG.info("removing stray bridge port %s", action.host_name)
                    await self._host.run(netlink.delete_link, action.host_index)
                else:
                    await self._adopt(action)
                self.errors.pop(_key(action), None)
            except Exception as exc:
                self.errors[_key(action)] = str(exc)
                LOG.error("%s: %s", _key(action), exc)
        live = {t.host_index: t for t in await self._dull.run(netlink.dull_twins)}
        for host_index in list(self.adopted):
            if host_index not in live:  # removed behind our back (e.g. its host link went)
                self._forget(self.adopted[host_index])
        for twin in live.values():
            await self._refresh(twin)

    async def _adopt(self, goal: Adopt) -> None:
        LOG.info("adopting %s (%s)", goal.host_name, goal.method)
        tmp = await self._host.run(netlink.create_in_host, goal.method, goal.host_index,
                                   self.ctx.dull_ns)
        try:
            await self._dull.run(netlink.configure_in_dull, tmp, goal.method, goal.host_index,
                                 goal.host_name)
        except Exception:
            await self._dull.run(netlink.delete_by_name, tmp)
            await self._host.run(netlink.delete_by_name, netlink.port_name(goal.host_index))
            raise

    async def _refresh(self, twin: Twin) -> None:
        """Track a live twin; announce it once it has a link-local, withdraw if that goes."""
        entry = self.adopted.get(twin.host_index)
        if entry is None:
            entry = self.adopted[twin.host_index] = AdoptedLink(
                twin.host_index, twin.host_name, twin.method, twin.dull_index, twin.dull_name,
                since=time.monotonic())
        address = await self._dull.run(netlink.link_local, twin.dull_index)
        if address == entry.link_local:
            return
        if entry.link_local is not None:
            self.ctx.bus.publish(events.LinkReleased(entry.host_name, entry.dull_name))
        entry.link_local = address
        if address is not None:
            LOG.info("%s ready in DULL as %s (%s)", entry.host_name, entry.dull_name, address)
            self.ctx.bus.publish(events.LinkAdopted(entry.host_name, entry.dull_name,
                                                    entry.dull_index, address))

    def _forget(self, entry: AdoptedLink) -> None:
        self.adopted.pop(entry.host_index, None)
        if entry.link_local is not None:
            self.ctx.bus.publish(events.LinkReleased(entry.host_name, entry.dull_name))

    async def _release(self, twin: Twin) -> None:
        LOG.info("releasing %s (twin %s)", twin.host_name, twin.dull_name)
        await self._dull.run(netlink.delete_link, twin.dull_index)
        if twin.method == "veth":  # deleting one end of a veth deletes both; be sure
            await self._host.run(netlink.delete_by_name, netlink.port_name(twin.host_index))
        entry = self.adopted.get(twin.host_index)
        if entry is not None and entry.dull_index == twin.dull_index:
            self._forget(entry)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for bell in self._bells:
            loop.remove_reader(bell.fileno())
            bell.close()
        self._bells = []
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if not self.keep_on_stop:
            for twin in await self._dull.run(netlink.dull_twins):
                try:
                    await self._release(twin)
                except Exception as exc:
                    LOG.error("could not remove twin %s: %s", twin.dull_name, exc)
        self._host.close()
        self._dull.close()

    def status(self) -> LinksStatus:
        return {"interfaces": [e.to_dict() for e in sorted(self.adopted.values(),
                                                            key=lambda e: e.host_name)],
                "errors": dict(self.errors)}


def _key(action: Adopt | Release | RemoveStrayPort) -> str:
    if isinstance(action, Release):
        return action.twin.host_name
    return action.host_name

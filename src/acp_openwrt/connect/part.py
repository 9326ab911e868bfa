"""ConnectPart, the acpd part for ACP connect interfaces (RFC 8994 §8.1).

Per enabled `config connect` section: move the device into the ACP namespace (interface.py),
give it the connect subnet's router address, the IPv4 address if configured, RPF rules; send RAs
on it (ra_sender.py); start the IPv4 relays on the relay address (relay.py); publish
ConnectSubnetUp so that RPL announces the subnet. A device that is not there yet is retried
every `retry_interval` seconds. stop() undoes all of it and moves the device back to the host
namespace in the state it had (unless `keep_on_stop`: then a restarted acpd adopts it by alias).

The connect interface is never an RPL or GRASP interface: those run only on ChannelUp
interfaces, and this part publishes none. It is never DULL's either: it has left the host
namespace, and link adoption ignores its name (config.ignore_patterns).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .. import netns
from ..events import ConnectSubnetDown, ConnectSubnetUp
from ..identity.address import AddressError
from ..node_context import NodeContext, Part
from . import interface
from .addressing import ConnectSubnet, manual_warning, plan_subnets
from .config import ConnectConfig
from .ra import MAX_RTR_ADV_INTERVAL, MIN_DELAY_BETWEEN_RAS, RaContent, RaSchedule
from .ra_sender import RaSender
from .relay import TcpRelay, UdpRelay

if TYPE_CHECKING:  # the control API's types: 2 MB of TypedDicts acpd needs no instance of
    from ..control.api import ConnectEntry, ConnectStatus

LOG = logging.getLogger("acpd.connect")
T = TypeVar("T")
LINK_LOCAL_TIMEOUT = 5.0


@dataclass
class _Entry:
    config: ConnectConfig
    state: str = "pending"            # pending, missing, up, error, disabled
    error: str | None = None
    subnet: ConnectSubnet | None = None
    placed: interface.Placed | None = None
    moved: bool = False               # the device is in the ACP namespace because of us
    was_up: bool = True               # its admin state in the host namespace
    ra: RaSender | None = None
    relays: list[TcpRelay | UdpRelay] = field(default_factory=list)
    retry: asyncio.Task[None] | None = None


class ConnectPart(Part):
    name = "connect"

    def __init__(self, ctx: NodeContext, connects: Iterable[ConnectConfig] | None = None, *,
                 host_namespace: str | None = None,
                 ra_interval: float = MAX_RTR_ADV_INTERVAL,
                 ra_min_delay: float = MIN_DELAY_BETWEEN_RAS,
                 retry_interval: float = 5.0) -> None:
        """`connects` defaults to ctx.config.connect; `host_namespace` None is acpd's own
        namespace (tests pass a named one)."""
        self.ctx = ctx
        if connects is None:
            connects = getattr(ctx.config, "connect", ())
        self.entries = [_Entry(c, state="pending" if c.enabled else "disabled") for c in connects]
        self.host_namespace = host_namespace
        self.ra_interval = ra_interval
        self.ra_min_delay = ra_min_delay
        self.retry_interval = retry_interval
        self.keep_on_stop = False
        self.address: ipaddress.IPv6Address | None = None
        self.reason: str | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        ctx.control.register("connect", self._control)

    # ------------------------------------------------------------ threads
    async def _in_acp(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(netns.call_in, self.ctx.acp_ns, fn, *args)

    async def _in_host(self, fn: Callable[..., T], *args: Any) -> T:
        if self.host_namespace is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.to_thread(netns.call_in, self.host_namespace, fn, *args)

    async def _acp_socket(self, family: int, kind: int) -> socket.socket:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, socket.socket, family, kind)

    # ---------------------------------------------------------- lifecycle
    async def start(self) -> None:
        ident = self.ctx.identity or {}
        if not ident.get("acp_address"):
            self.reason = "no ACP address (no LDevID yet)"
            LOG.warning("ACP connect not started: %s", self.reason)
            return
        self.address = ipaddress.IPv6Address(ident["acp_address"])
        self._executor = netns.namespace_executor(self.ctx.acp_ns)
        enabled = [e for e in self.entries if e.config.enabled]
        subnets = plan_subnets([e.config for e in enabled], self.address)
        for entry in enabled:
            planned = subnets[entry.config.name]
            if isinstance(planned, AddressError):
                entry.state, entry.error = "error", str(planned)
                LOG.error("connect %s: %s", entry.config.name, planned)
                continue
            entry.subnet = planned
            if planned.source == "prefix":
                warning = manual_warning(planned.network, self.address)
                if warning:
                    LOG.warning("connect %s: %s", entry.config.name, warning)
            await self._try(entry)

    async def _try(self, entry: _Entry) -> None:
        try:
            await self._bring_up(entry)
        except interface.DeviceMissing:
            if entry.state != "missing":
                LOG.warning("connect %s: device %s not found; retrying every %gs",
                            entry.config.name, entry.config.device, self.retry_interval)
            entry.state = "missing"
            entry.retry = asyncio.ensure_future(self._retry_later(entry))
        except Exception as exc:  # one bad connect must not stop the node or the others
            entry.state, entry.error = "error", str(exc)
            LOG.error("connect %s: %s", entry.config.name, exc)
            await self._take_down(entry, move_back=True)

    async def _retry_later(self, entry: _Entry) -> None:
        await asyncio.sleep(self.retry_interval)
        entry.retry = None
        await self._try(entry)

    async def _bring_up(self, entry: _Entry) -> None:
        c, subnet = entry.config, entry.subnet
        assert subnet is not None
        found = await self._in_acp(interface.find_in_acp, c.device)
        if found is False:
            raise RuntimeError(f"an interface named {c.device} already exists in namespace "
                               f"{self.ctx.acp_ns} and is not an ACP connect interface")
        if found is None:
            was_up = await self._in_host(interface.move_out_of_host, c.device, self.ctx.acp_ns)
            LOG.info("connect %s: moved %s into %s", c.name, c.device, self.ctx.acp_ns)
        else:
            was_up = found[1]
            LOG.info("connect %s: adopting %s already in %s", c.name, c.device, self.ctx.acp_ns)
        entry.moved, entry.was_up = True, was_up
        relay = subnet.relay if c.forward else None
        entry.placed = await self._in_acp(interface.configure, c.device, c.name, was_up,
                                          subnet.network, subnet.router, relay, c.ipv4)
        try:
            await self._in_acp(_wait_link_local, entry.placed.index)
        except (TimeoutError, OSError) as exc:
            LOG.warning("connect %s: %s (RAs retry)", c.name, exc)
        if c.router_advertisements:
            loop = asyncio.get_running_loop()
            content = RaContent(subnet.network, tuple(self._aggregates()), entry.placed.mac,
                                default_router=c.default_router)
            schedule = RaSchedule(loop.time(), self.ra_interval,
                                  min_delay_between=self.ra_min_delay)
            entry.ra = RaSender(self.ctx.acp_ns, c.device, entry.placed.index, content, schedule)
            entry.ra.open()
        if relay is not None and c.device_ipv4 is not None:
            for fwd in c.forward:
                kind = TcpRelay if fwd.protocol == "tcp" else UdpRelay
                r = kind(self._acp_socket, (relay, fwd.port), (c.device_ipv4, fwd.port),
                         c.relay_max_connections, c.relay_idle_timeout)
                entry.relays.append(r)
                await r.start()
        entry.state, entry.error = "up", None
        self.ctx.bus.publish(ConnectSubnetUp(c.name, c.device, str(subnet.network),
                                             subnet.dao_target))
        LOG.info("connect %s: %s on %s, router %s%s", c.name, subnet.network, c.device,
                 subnet.router, f", relays on {relay}" if relay else "")

    def _aggregates(self) -> list[ipaddress.IPv6Network]:
        """RIO prefixes: the ACP's ULA /48 (§8.1.3 announces aggregates, not node prefixes)."""
        ident = self.ctx.identity or {}
        assert self.address is not None
        ula = ipaddress.IPv6Network((self.address, 48), strict=False)
        out = [ula]
        if ident.get("ula_prefix"):
            other = ipaddress.IPv6Network(ident["ula_prefix"])
            if other != ula:
                out.append(other)
        return out

    async def stop(self) -> None:
        for entry in reversed(self.entries):
            await self._take_down(entry, move_back=not self.keep_on_stop)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _take_down(self, entry: _Entry, move_back: bool) -> None:
        c = entry.config
        if entry.retry is not None:
            entry.retry.cancel()
            await asyncio.gather(entry.retry, return_exceptions=True)
            entry.retry = None
        if entry.state == "up" and entry.subnet is not None:
            self.ctx.bus.publish(ConnectSubnetDown(c.name, c.device, str(entry.subnet.network)))
        for r in entry.relays:
            await r.stop()
        entry.relays.clear()
        if entry.ra is not None:
            await entry.ra.close(final=move_back)
            entry.ra = None
        if entry.moved and move_back and entry.subnet is not None:
            relay = entry.subnet.relay if c.forward else None
            host_fd = self._host_fd()
            try:
                await self._in_acp(interface.release, c.device, relay, host_fd)
            finally:
                os.close(host_fd)
            await self._in_host(interface.restore_state, c.device, entry.was_up)
            LOG.info("connect %s: %s back in the host namespace", c.name, c.device)
        entry.placed = None
        entry.moved = entry.moved and not move_back
        if entry.state == "up":
            entry.state = "pending"

    def _host_fd(self) -> int:
        path = netns.netns_path(self.host_namespace) if self.host_namespace \
            else "/proc/thread-self/ns/net"
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    # ------------------------------------------------------------- status
    def status(self) -> ConnectStatus:
        """Per connect: state, subnet, router and relay addresses, RA and relay counters."""
        out: list[ConnectEntry] = []
        for e in self.entries:
            item = e.config.to_dict()
            item.update(state=e.state, error=e.error, subnet=None, source=None, router=None,
                        relay=None, dao_target=None, slaac=None, ra=None, relays=[])
            if e.subnet is not None:
                item.update(subnet=str(e.subnet.network), source=e.subnet.source,
                            router=str(e.subnet.router), dao_target=e.subnet.dao_target,
                            slaac=e.subnet.slaac,
                            relay=str(e.subnet.relay) if e.config.forward else None)
            if e.ra is not None:
                item["ra"] = {key: e.ra.counters[key] for key in
                              ("ra_sent", "rs_received", "rs_dropped", "send_errors")}
            item["relays"] = [r.status() for r in e.relays]
            # the config's keys and the ones above (tests/netns/test_control_api.py checks it)
            out.append(cast("ConnectEntry", item))
        return {"active": self.address is not None, "reason": self.reason,
                "namespace": self.ctx.acp_ns, "connects": out}

    def _control(self, _request: dict[str, Any]) -> ConnectStatus:
        return self.status()


def _wait_link_local(index: int) -> str:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return netns.wait_link_local(ipr, index, LINK_LOCAL_TIMEOUT)

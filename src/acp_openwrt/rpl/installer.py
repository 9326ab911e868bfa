"""Makes the RPL route plan true in the ACP namespace's main table, through pyroute2.

Every route RPL installs carries one routing protocol number, RTPROT_ACP_RPL (155: free in
iproute2's rt_protos and the kernel's RTPROT_* list, and easy to remember as ICMPv6 type 155).
So `ip -6 route show proto 155` lists exactly RPL's routes, a restarted acpd adopts what its
predecessor left (the first reconcile keeps what is still wanted and removes the rest), and
shutdown removes exactly those. Nothing else in the table is ever touched: not the /128 on
loopback, not the kernel's link-local routes.

Reconcile, not flush-and-add: the installed set is read back from netlink each time, diffed
against the plan, and only the difference applied (a changed next hop is one `replace`, so the
prefix never goes unrouted in between).

The IPRoute handle lives on one worker thread that stays inside the namespace for its whole
life (netns.namespace_executor); the event loop only awaits it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pyroute2 import IPRoute

from .. import netns
from .linkstate import usable
from .routes import Route, RouteDiff, RouteKind, diff

T = TypeVar("T")

LOG = logging.getLogger("acpd.rpl.installer")
RTPROT_ACP_RPL = 155
RT_TABLE_MAIN = 254
FORWARDING_SYSCTL = "/proc/sys/net/ipv6/conf/all/forwarding"
RTN_UNICAST, RTN_BLACKHOLE, RTN_UNREACHABLE = 1, 6, 7
# The "black hole" for the unused part of the node's own prefix is an unreachable route: packets
# are dropped as with a null route, and the sender learns why (ICMPv6 destination unreachable).
BLACKHOLE_TYPE = RTN_UNREACHABLE


class RouteInstaller:
    """Owns the RTPROT_ACP_RPL routes of one namespace."""

    def __init__(self, namespace: str, protocol: int = RTPROT_ACP_RPL) -> None:
        if not 0 < protocol < 256 or protocol in (1, 2, 3, 4):
            raise ValueError(f"routing protocol {protocol} is reserved or out of range")
        self.namespace = namespace
        self.protocol = protocol
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._ipr: IPRoute | None = None  # created on, and used only from, the worker thread
        self.counters: Counter[str] = Counter()
        self.last: frozenset[Route] = frozenset()

    # ------------------------------------------------------- event-loop face
    def open(self) -> None:
        if self._executor is None:
            self._executor = netns.namespace_executor(self.namespace)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("installer is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def apply(self, desired: Iterable[Route]) -> RouteDiff:
        """Make the tagged routes equal `desired`; returns what was changed."""
        return await self._run(self.reconcile, frozenset(desired))

    async def installed(self) -> frozenset[Route]:
        return await self._run(self.dump)

    async def link(self, ifname: str) -> tuple[int, bool] | None:
        """An interface's index inside the namespace and whether it is usable (up, carrier);
        None if it does not exist."""
        return await self._run(self._link, ifname)

    async def enable_forwarding(self) -> bool:
        """net.ipv6.conf.all.forwarding=1 in the namespace (an RPL node is a router); returns
        whether it was off before."""
        return await self._run(self._enable_forwarding)

    async def close(self, remove: bool = True) -> None:
        """Remove our routes (unless told not to), then drop the handle and the thread."""
        if self._executor is None:
            return
        try:
            if remove:
                await self.apply(())
        finally:
            try:
                await self._run(self._close_handle)
            finally:
                self._executor.shutdown(wait=True)
                self._executor = None

    # --------------------------------------------------- worker-thread face
    def _handle(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def _close_handle(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @staticmethod
    def _enable_forwarding() -> bool:
        # /proc/sys/net shows the namespace of the thread that opens it: ours.
        with open(FORWARDING_SYSCTL, "r+") as fh:
            was_on = fh.read().strip() == "1"
            if not was_on:
                fh.seek(0)
                fh.write("1")
        return not was_on

    def _lookup(self, ifname: str) -> int | None:
        found = self._handle().link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    def _link(self, ifname: str) -> tuple[int, bool] | None:
        index = self._lookup(ifname)
        if index is None:
            return None
        links = self._handle().get_links(index)
        return index, bool(links) and usable(int(links[0]["flags"]))

    def dump(self) -> frozenset[Route]:
        """The routes in the main table tagged with our protocol, as Route values."""
        ipr = self._handle()
        names = {int(link["index"]): link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found: set[Route] = set()
        for msg in ipr.get_routes(family=socket.AF_INET6, table=RT_TABLE_MAIN):
            if msg["proto"] != self.protocol:
                continue
            dst = msg.get_attr("RTA_DST") or "::"
            prefix = ipaddress.IPv6Network(f"{dst}/{msg['dst_len']}", strict=False)
            if msg["type"] in (RTN_UNREACHABLE, RTN_BLACKHOLE):
                found.add(Route(prefix, RouteKind.BLACKHOLE))
                continue
            gateway = msg.get_attr("RTA_GATEWAY")
            oif = msg.get_attr("RTA_OIF")
            found.add(Route(prefix, RouteKind.UNICAST,
                            ipaddress.IPv6Address(gateway) if gateway else None,
                            names.get(oif) if oif is not None else None))
        return frozenset(found)

    def reconcile(self, desired: frozenset[Route]) -> RouteDiff:
        change = diff(self.dump(), desired)
        replaced = set()
        for route in change.add:
            if self._install(route):
                replaced.add(route.prefix)
        for route in change.remove:
            if route.prefix not in replaced:
                self._delete(route)
        self.last = desired
        return change

    def _install(self, route: Route) -> bool:
        ipr = self._handle()
        spec: dict[str, object] = {"dst": str(route.prefix.network_address),
                                   "dst_len": route.prefix.prefixlen,
                                   "family": socket.AF_INET6, "proto": self.protocol,
                                   "table": RT_TABLE_MAIN}
        if route.kind is RouteKind.BLACKHOLE:
            spec["type"] = BLACKHOLE_TYPE
        else:
            oif = self._lookup(route.ifname) if route.ifname else None
            if oif is None or route.gateway is None:
                self.counters["install_errors"] += 1
                LOG.debug("no interface %s for %s", route.ifname, route.prefix)
                return False
            spec.update(type=RTN_UNICAST, gateway=str(route.gateway), oif=oif)
        try:
            ipr.route("replace", **spec)
        except Exception as exc:  # NetlinkError (ENODEV, ENETUNREACH...): next reconcile retries
            self.counters["install_errors"] += 1
            LOG.debug("installing %s failed: %s", route, exc)
            return False
        self.counters["installed"] += 1
        return True

    def _delete(self, route: Route) -> None:
        ipr = self._handle()
        spec: dict[str, object] = {"dst": str(route.prefix.network_address),
                                   "dst_len": route.prefix.prefixlen,
                                   "family": socket.AF_INET6, "proto": self.protocol,
                                   "table": RT_TABLE_MAIN}
        if route.kind is RouteKind.BLACKHOLE:
            spec["type"] = BLACKHOLE_TYPE
        elif route.gateway is not None:
            spec["gateway"] = str(route.gateway)
        try:
            ipr.route("del", **spec)
        except Exception as exc:
            if getattr(exc, "code", None) not in (errno.ESRCH, errno.ENOENT):
                self.counters["remove_errors"] += 1
                LOG.debug("removing %s failed: %s", route, exc)
            return
        self.counters["removed"] += 1

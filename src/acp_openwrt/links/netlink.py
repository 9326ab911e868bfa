"""The netlink edge of adoption: snapshots of links and twins, creating and removing twins.

Every function here is blocking and takes an IPRoute made in the right namespace; acpd runs
them on a `NetlinkWorker` (one thread per namespace, one IPRoute per thread), so the event
loop never blocks on netlink and no thread ever changes namespace twice.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..netns import namespace_executor, netns_path
from .plan import HostLink, Method, Twin, parse_twin_alias, port_alias, twin_alias

LOG = logging.getLogger("acpd.links")
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
RTMGRP_LINK = 0x1
RTMGRP_IPV6_IFADDR = 0x100
NETLINK_ROUTE = 0
T = TypeVar("T")
# DULL is link-local only: no router advertisements, no SLAAC, no forwarding. DAD is off
# because twins have random MACs (a 2^-64 clash) and a flood should leave at once.
DULL_SYSCTLS = {"accept_ra": "0", "autoconf": "0", "forwarding": "0", "accept_dad": "0"}


class NetlinkWorker:
    """One thread living in one namespace with one IPRoute; `await worker.run(fn, *args)`."""

    def __init__(self, namespace: str | None, name: str = "host") -> None:
        self.namespace = namespace
        if namespace is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"nl:{name}")
        else:
            self._executor = namespace_executor(namespace)
        self._local = threading.local()

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            ipr = self._local.ipr = IPRoute()
        return fn(ipr, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def close(self) -> None:
        def _close() -> None:
            ipr = getattr(self._local, "ipr", None)
            if ipr is not None:
                ipr.close()
                self._local.ipr = None
        try:
            self._executor.submit(_close).result(timeout=5)
        except Exception:  # a broken worker has nothing left to close
            pass
        self._executor.shutdown(wait=False)


def doorbell(groups: int) -> socket.socket:
    """A netlink socket subscribed to `groups` in the calling thread's namespace.

    Its messages are not parsed: any message means "something changed, reconcile".
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
    sock.bind((0, groups))
    return sock


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def host_links(ipr: IPRoute) -> list[HostLink]:
    return [HostLink(index=msg["index"], name=msg.get_attr("IFLA_IFNAME"), kind=_kind(msg),
                     link_type=msg["ifi_type"], master=msg.get_attr("IFLA_MASTER"),
                     alias=msg.get_attr("IFLA_IFALIAS"), loopback=bool(msg["flags"] & IFF_LOOPBACK))
            for msg in ipr.get_links()]


def dull_twins(ipr: IPRoute) -> list[Twin]:
    twins = []
    for msg in ipr.get_links():
        parsed = parse_twin_alias(msg.get_attr("IFLA_IFALIAS"))
        if parsed is not None:
            twins.append(Twin(msg["index"], msg.get_attr("IFLA_IFNAME"), *parsed))
    return twins


def link_local(ipr: IPRoute, index: int) -> str | None:
    """The usable (not tentative, not failed) fe80:: address of link `index`, if any."""
    for msg in ipr.get_addr(family=socket.AF_INET6, index=index):
        addr = str(msg.get_attr("IFA_ADDRESS"))
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if addr.startswith("fe80:") and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            return addr
    return None


def _write_sysctls(ifname: str, values: dict[str, str]) -> None:
    """/proc/sys/net follows the namespace of the thread that opens it."""
    for key, value in values.items():
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
            f.write(value)


def _delete(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def temp_name(method: Method, host_index: int) -> str:
    return f"acp{'m' if method == 'macvlan' else 't'}{host_index}"


def port_name(bridge_index: int) -> str:
    return f"acpb{bridge_index}"


def create_in_host(ipr: IPRoute, method: Method, host_index: int, dull_ns: str) -> str:
    """Make the twin (and for a bridge, its port end) and move the twin into DULL.

    Returns the twin's temporary name. On failure nothing made here is left behind.
    """
    tmp = temp_name(method, host_index)
    ns_fd = netns_path(dull_ns)
    if method == "macvlan":
        ipr.link("add", ifname=tmp, kind="macvlan", link=host_index, macvlan_mode="bridge")
        made = [tmp]
    else:
        port = port_name(host_index)
        ipr.link("add", ifname=port, kind="veth", peer={"ifname": tmp})
        made = [port]
    try:
        if method == "veth":
            port_index = ipr.link_lookup(ifname=port)[0]
            _write_sysctls(port, {"disable_ipv6": "1"})  # a bare bridge port: no host addresses
            ipr.link("set", index=port_index, ifalias=port_alias(host_index))
            ipr.link("set", index=port_index, master=host_index)
            ipr.link("set", index=port_index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname=tmp)[0], net_ns_fd=ns_fd)
    except Exception:
        for name in made:
            found = ipr.link_lookup(ifname=name)
            if found:
                _delete(ipr, found[0])
        raise
    return tmp


def configure_in_dull(ipr: IPRoute, tmp: str, method: Method, host_index: int,
                      host_name: str) -> tuple[int, str]:
    """Name the twin like its host link, mark it, make it link-local only, bring it up."""
    index = ipr.link_lookup(ifname=tmp)[0]
    name = host_name
    try:
        ipr.link("set", index=index, ifname=host_name)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        name = tmp  # a foreign link holds the name: keep the temporary one
    ipr.link("set", index=index, ifalias=twin_alias(method, host_index, host_name))
    _write_sysctls(name, DULL_SYSCTLS)
    ipr.link("set", index=index, state="up")
    return index, name


def delete_link(ipr: IPRoute, index: int) -> None:
    _delete(ipr, index)


def delete_by_name(ipr: IPRoute, name: str) -> None:
    found = ipr.link_lookup(ifname=name)
    if found:
        _delete(ipr, found[0])


def ensure_loopback_up(ipr: IPRoute) -> None:
    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

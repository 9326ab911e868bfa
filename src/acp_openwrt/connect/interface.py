"""Netlink for ACP connect: the device into the ACP namespace and back, its addresses and rules.

Every function runs on a thread that is already inside the right namespace (the service calls
them through netns.call_in, or on a plain thread for acpd's own host namespace) and makes its
own IPRoute there.

Why the device itself moves (not a macvlan of it): an ACP connect interface "provides exclusive
access to only the ACP" (RFC 8994 §8.1.1). While the physical port stays in the host namespace,
anything there (netifd, a DHCP client, the host's own IPv6 link-local and RS) can still send on
that wire, so data-plane traffic would share the NOC link; with a macvlan the parent also keeps
receiving. Moved, the port exists only in the ACP namespace: nothing but the ACP can use it, and
DULL cannot adopt it because it is no longer in the host namespace. `stop()` moves it back, down
or up as it was; if acpd dies, the kernel returns a physical port to the initial namespace when
the ACP namespace is deleted, and a restarted acpd finds it by its alias.

Reverse-path filtering (§8.1.1, MUST): two IPv6 rules per connect interface, `iif <dev> from
<subnet> lookup main` then `iif <dev> prohibit`. Local delivery (rule 0, table local) comes first,
so ND, RS and the relay addresses still work; only forwarding from a foreign source is refused.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Literal

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..netns import netns_path

CONNECT_ALIAS = "acp-connect"
RULE_ALLOW = 9000
RULE_DENY = 9001
IFA_F_NODAD = 0x02
IFF_UP = 0x1
MAIN_TABLE = 254


class DeviceMissing(LookupError):
    """The configured device is in neither namespace (yet)."""


@dataclass(frozen=True)
class Placed:
    """A connect interface inside the ACP namespace."""
    index: int
    mac: bytes | None
    was_up: bool          # its state in the host namespace, restored on the way back


def alias(name: str, was_up: bool) -> str:
    return f"{CONNECT_ALIAS} {name} {'up' if was_up else 'down'}"


def parse_alias(text: str | None) -> tuple[str, bool] | None:
    parts = (text or "").split(" ")
    if len(parts) != 3 or parts[0] != CONNECT_ALIAS or parts[2] not in ("up", "down"):
        return None
    return parts[1], parts[2] == "up"


def _lookup(ipr: IPRoute, device: str) -> int | None:
    found = ipr.link_lookup(ifname=device)
    return int(found[0]) if found else None


def move_out_of_host(device: str, acp_ns: str) -> bool:
    """In the host namespace: move `device` into `acp_ns`; its admin state (up?) is returned."""
    with IPRoute() as ipr:
        index = _lookup(ipr, device)
        if index is None:
            raise DeviceMissing(device)
        was_up = bool(ipr.get_links(index)[0]["flags"] & IFF_UP)
        fd = os.open(netns_path(acp_ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("set", index=index, net_ns_fd=fd)
        finally:
            os.close(fd)
    return was_up


def find_in_acp(device: str) -> tuple[str, bool] | Literal[False] | None:
    """In ACP: (section name, was_up) from our alias if `device` is ours; False if a link of
    that name exists but is not ours; None if absent."""
    with IPRoute() as ipr:
        index = _lookup(ipr, device)
        if index is None:
            return None
        parsed = parse_alias(ipr.get_links(index)[0].get_attr("IFLA_IFALIAS"))
        return parsed if parsed is not None else False


def _sysctl(device: str, key: str, value: str) -> None:
    with open(f"/proc/sys/net/ipv6/conf/{device}/{key}", "w") as fh:
        fh.write(value)


def _add_address(ipr: IPRoute, index: int, address: str, prefixlen: int, family: int,
                 flags: int = 0) -> None:
    try:
        if family == socket.AF_INET6:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen, IFA_FLAGS=flags)
        else:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def configure(device: str, name: str, was_up: bool, subnet: ipaddress.IPv6Network,
              router: ipaddress.IPv6Address, relay: ipaddress.IPv6Address | None,
              ipv4: ipaddress.IPv4Interface | None) -> Placed:
    """In ACP: mark, harden, address and bring up the connect interface (idempotent)."""
    with IPRoute() as ipr:
        index = _lookup(ipr, device)
        if index is None:
            raise DeviceMissing(device)
        ipr.link("set", index=index, IFLA_IFALIAS=alias(name, was_up))
        # A router here, never a host: the device's RAs and redirects must not steer the ACP.
        for key, value in (("forwarding", "1"), ("accept_ra", "0"), ("autoconf", "0"),
                           ("accept_redirects", "0")):
            _sysctl(device, key, value)
        ipr.link("set", index=index, state="up")
        _add_address(ipr, index, str(router), subnet.prefixlen, socket.AF_INET6, IFA_F_NODAD)
        if ipv4 is not None:
            _add_address(ipr, index, str(ipv4.ip), ipv4.network.prefixlen, socket.AF_INET)
        if relay is not None:
            lo = _lookup(ipr, "lo")
            assert lo is not None
            _add_address(ipr, lo, str(relay), 128, socket.AF_INET6, IFA_F_NODAD)
        _remove_rules(ipr, device)
        ipr.rule("add", family=socket.AF_INET6, priority=RULE_ALLOW, iifname=device,
                 src=str(subnet.network_address), src_len=subnet.prefixlen, table=MAIN_TABLE,
                 action="FR_ACT_TO_TBL")
        ipr.rule("add", family=socket.AF_INET6, priority=RULE_DENY, iifname=device,
                 action="FR_ACT_PROHIBIT")
        link = ipr.get_links(index)[0]
        mac = link.get_attr("IFLA_ADDRESS")
        return Placed(index, bytes.fromhex(mac.replace(":", "")) if mac else None, was_up)


def _remove_rules(ipr: IPRoute, device: str) -> int:
    removed = 0
    for rule in ipr.get_rules(family=socket.AF_INET6):
        if rule.get_attr("FRA_IIFNAME") == device and \
                rule.get_attr("FRA_PRIORITY") in (RULE_ALLOW, RULE_DENY):
            ipr.rule("del", family=socket.AF_INET6, priority=rule.get_attr("FRA_PRIORITY"),
                     iifname=device, src=rule.get_attr("FRA_SRC"), src_len=rule["src_len"],
                     action=rule["action"], table=rule["table"])
            removed += 1
    return removed


def rules_of(device: str) -> list[tuple[int, str | None, int]]:
    """In ACP: our RPF rules for `device` as (priority, source, action) (status, tests)."""
    with IPRoute() as ipr:
        return [(r.get_attr("FRA_PRIORITY"), r.get_attr("FRA_SRC"), r["action"])
                for r in ipr.get_rules(family=socket.AF_INET6)
                if r.get_attr("FRA_IIFNAME") == device
                and r.get_attr("FRA_PRIORITY") in (RULE_ALLOW, RULE_DENY)]


def release(device: str, relay: ipaddress.IPv6Address | None, host_fd: int | None) -> None:
    """In ACP: undo configure(); with host_fd, move the device back (addresses go with the move)."""
    with IPRoute() as ipr:
        _remove_rules(ipr, device)
        lo = _lookup(ipr, "lo")
        if relay is not None and lo is not None:
            try:
                ipr.addr("del", index=lo, address=str(relay), prefixlen=128)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                    raise
        index = _lookup(ipr, device)
        if index is None or host_fd is None:
            return
        ipr.link("set", index=index, state="down")
        ipr.flush_addr(index=index)
        ipr.link("set", index=index, IFLA_IFALIAS="")
        ipr.link("set", index=index, net_ns_fd=host_fd)


def restore_state(device: str, up: bool) -> None:
    """In the host namespace: the device's admin state as it was before ACP connect."""
    if not up:
        return
    with IPRoute() as ipr:
        index = _lookup(ipr, device)
        if index is not None:
            ipr.link("set", index=index, state="up")

"""The per-peer xfrm interfaces, the peer routes in DULL and the ACP loopback address.

Every function here is blocking netlink through pyroute2 and must run on a thread that is
already inside the named namespace (the service uses `netns.namespace_executor`). An interface
is created in DULL with `dev <dull link>` (so its SAs, which stay in DULL, find it), renamed and
moved into the ACP namespace when its CHILD SA is up, and deleted wherever it is at teardown.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..netns import netns_path, socket_in, wait_link_local

IFF_UP = 0x1
IFF_MULTICAST = 0x1000
IFA_F_NODAD = 0x02
LINK_LOCAL_PREFIX = 64
NETLINK_XFRM = 6
XFRM_MSG_FLUSHSA, XFRM_MSG_FLUSHPOLICY = 0x1C, 0x1D
IPSEC_PROTO_ANY = 255
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 0x1, 0x4, 0x2


@dataclass(frozen=True)
class XfrmLink:
    ifname: str
    index: int
    if_id: int
    link: int      # ifindex of the DULL link it was created on (an index in DULL)
    up: bool


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def list_xfrm() -> list[XfrmLink]:
    """The xfrm interfaces of the current namespace."""
    out = []
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            if info is None or info.get_attr("IFLA_INFO_KIND") != "xfrm":
                continue
            data = info.get_attr("IFLA_INFO_DATA")
            if_id = data.get_attr("IFLA_XFRM_IF_ID") if data is not None else None
            link = data.get_attr("IFLA_XFRM_LINK") if data is not None else None
            out.append(XfrmLink(msg.get_attr("IFLA_IFNAME"), msg["index"], int(if_id or 0),
                                int(link or 0), bool(msg["flags"] & IFF_UP)))
    return out


def link_local_of(ifname: str, timeout: float = 5.0) -> str:
    """Our usable link-local address on a DULL link (the IKE endpoint)."""
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        if index is None:
            raise OSError(errno.ENODEV, f"no link {ifname} in DULL")
        return wait_link_local(ipr, index, timeout=timeout)


def link_of_address(address: str) -> str | None:
    """The link in the current namespace that has `address` (one of our link-locals)."""
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET6, address=address):
            found = ipr.get_links(msg["index"])
            if found:
                return str(found[0].get_attr("IFLA_IFNAME"))
    return None


def prepare(link_ifname: str, name: str, if_id: int, peer_ll: str) -> None:
    """In DULL: the xfrm interface on `link_ifname` unless one with `if_id` exists, and the
    /128 route to the peer's link-local on that link (outer ESP leaves on the wrong link of a
    multi-link node without it: lab-notes §3)."""
    with IPRoute() as ipr:
        link = _index(ipr, link_ifname)
        if link is None:
            raise OSError(errno.ENODEV, f"no link {link_ifname} in DULL")
        if not any(x.if_id == if_id for x in list_xfrm()):
            ipr.link("add", ifname=name, kind="xfrm", xfrm_link=link, xfrm_if_id=if_id)
        ipr.route("replace", dst=f"{peer_ll}/128", oif=link, family=socket.AF_INET6)


def hand_over(if_id: int, new_name: str, acp_ns: str) -> None:
    """In DULL: rename the interface of `if_id` and move it into the ACP namespace."""
    with IPRoute() as ipr:
        match = [x for x in list_xfrm() if x.if_id == if_id]
        if not match:
            raise OSError(errno.ENODEV, f"no xfrm interface with if_id {if_id} in DULL")
        index = match[0].index
        if match[0].ifname != new_name:
            ipr.link("set", index=index, ifname=new_name)
        fd = os.open(netns_path(acp_ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("set", index=index, net_ns_fd=fd)
        finally:
            os.close(fd)


def create_for_acp(link_ifname: str, name: str, if_id: int, peer_ll: str, new_name: str,
                   acp_ns: str) -> None:
    """In DULL, in one go (one trip to the namespace's worker): `prepare`, then `hand_over`."""
    prepare(link_ifname, name, if_id, peer_ll)
    hand_over(if_id, new_name, acp_ns)


def bring_up(ifname: str, link_local: str) -> int:
    """In ACP: multicast on (xfrm interfaces start without it), up, our link-local; ifindex."""
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        if index is None:
            raise OSError(errno.ENODEV, f"no link {ifname} in the ACP namespace")
        ipr.link("set", index=index, flags=IFF_UP | IFF_MULTICAST, change=IFF_UP | IFF_MULTICAST)
        try:
            ipr.addr("add", index=index, address=link_local, prefixlen=LINK_LOCAL_PREFIX,
                     flags=IFA_F_NODAD)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        return index


def delete_if_id(if_id: int) -> bool:
    """Delete the xfrm interface with `if_id` in the current namespace, if there is one."""
    with IPRoute() as ipr:
        found = False
        for x in list_xfrm():
            if x.if_id == if_id:
                _quiet(partial(ipr.link, "del", index=x.index))
                found = True
        return found


def delete_route(peer_ll: str, link_ifname: str) -> None:
    with IPRoute() as ipr:
        link = _index(ipr, link_ifname)
        if link is not None:
            _quiet(lambda: ipr.route("del", dst=f"{peer_ll}/128", oif=link,
                                     family=socket.AF_INET6))


def flush_xfrm(namespace: str) -> None:
    """Delete every IPsec SA and policy in `namespace` (any thread; it opens its own socket).

    For the DULL namespace before a charon starts there without adopting: only our charon
    installs SAs there, and what a killed one left would linger (its SAs until their hard
    lifetime) next to the new charon's. pyroute2 has no XFRM family, hence the raw messages."""
    with socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM) as sock:
        sock.settimeout(2.0)
        requests = ((XFRM_MSG_FLUSHSA, struct.pack("=B3x", IPSEC_PROTO_ANY)),
                    (XFRM_MSG_FLUSHPOLICY, b""))
        for seq, (kind, body) in enumerate(requests, start=1):
            sock.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK,
                                  seq, 0) + body)
            reply = sock.recv(4096)
            if len(reply) >= 20 and struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply, 16)[0]
                if code:
                    raise OSError(code, f"xfrm flush: {os.strerror(code)}")


def _quiet(fn: Callable[[], object]) -> None:
    """Teardown of something already gone is fine."""
    try:
        fn()
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ESRCH, errno.ENOENT, errno.EADDRNOTAVAIL):
            raise


def set_loopback(address: str, present: bool) -> None:
    """In ACP: the node's ACP address as /128 on lo (lo up too), or its removal."""
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        if present:
            ipr.link("set", index=lo, state="up")
            try:
                ipr.addr("add", index=lo, address=address, prefixlen=128, flags=IFA_F_NODAD)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        else:
            _quiet(lambda: ipr.addr("del", index=lo, address=address, prefixlen=128))


def channel_link_local(acp_address: ipaddress.IPv6Address | None) -> str:
    """The link-local we give every channel interface: fe80:: + our ACP address's low 64 bits
    (unique per node; xfrm interfaces have no MAC to derive one from)."""
    low = int(acp_address) & ((1 << 64) - 1) if acp_address is not None else 1
    return str(ipaddress.IPv6Address((0xFE80 << 112) | (low or 1)))

"""RPL's raw ICMPv6 socket in the ACP namespace: type-155 messages in and out, per interface.

One socket serves every ACP interface. It is created inside the namespace (a socket stays in the
namespace it was made in) and then used from the event loop. The kernel filters everything but
type 155 (ICMP6_FILTER), computes the ICMPv6 checksum, and picks the interface's link-local
address as source for ff02::1a and fe80:: destinations; IPV6_PKTINFO says which interface a
message came in on. We send with hop limit 255 and accept any: RFC 6550 has no hop-limit rule
(unstrung sends DIO and DIS with 1); scope is the guard instead (see `accepts`).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable

from .. import netns
from . import constants as c
from .actions import Send

LOG = logging.getLogger("acpd.rpl.transport")
ICMP6_FILTER = 1                 # <netinet/icmp6.h>, level IPPROTO_ICMPV6
HOP_LIMIT = 255
RECV_BUFFER = 65535
ANCILLARY = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)  # in6_pktinfo + hop limit
# (interface, link-local source, ICMPv6 code, body after the 4-octet header, destination)
Receiver = Callable[[str, ipaddress.IPv6Address, int, bytes, ipaddress.IPv6Address], None]


def accepts(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address) -> str | None:
    """Why a type-155 message is not from a neighbour on this link, or None when it is.

    RFC 6550 §6: every RPL message but non-storing DAO/DAO-ACK (which the ACP does not use) goes
    from a link-local source to ff02::1a or a link-local unicast address. Routers never forward a
    packet with a link-local source or destination (RFC 4291 §2.5.6), so such a message was sent
    on this link whatever its hop limit: the hop limit 255 check of ND (RFC 4861) adds nothing on
    top, and RFC 6550 does not ask for it. A message to any other destination (the ACP address,
    ff02::1) is not RPL's, and an ACP link is one authenticated channel, so the peer is known.
    """
    if not src.is_link_local:
        return "not_link_local"
    if dst != c.ALL_RPL_NODES and not dst.is_link_local:
        return "not_link_local_destination"
    return None


def icmp6_filter(*passed: int) -> bytes:
    """struct icmp6_filter that blocks every type except `passed` (a set bit blocks a type)."""
    words = [0xFFFFFFFF] * 8
    for icmp_type in passed:
        words[icmp_type >> 5] &= ~(1 << (icmp_type & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


def group_request(group: ipaddress.IPv6Address, ifindex: int) -> bytes:
    """struct ipv6_mreq for IPV6_JOIN_GROUP / IPV6_LEAVE_GROUP."""
    return group.packed + struct.pack("=I", ifindex)


def pktinfo(ifindex: int, source: ipaddress.IPv6Address | None = None) -> bytes:
    """struct in6_pktinfo: outgoing interface, source left to the kernel unless given."""
    return (source.packed if source is not None else bytes(16)) + struct.pack("=I", ifindex)


class RplTransport:
    """The type-155 socket of one node; interfaces come and go at run time."""

    def __init__(self, namespace: str, receiver: Receiver) -> None:
        self.namespace = namespace
        self._receiver = receiver
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_name: dict[str, int] = {}
        self._by_index: dict[int, str] = {}
        self.counters: Counter[str] = Counter()

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        sock = netns.socket_in(self.namespace, socket.AF_INET6, socket.SOCK_RAW,
                               socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter(c.ICMPV6_TYPE_RPL))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setblocking(False)
            self._loop = loop or asyncio.get_running_loop()
            self._loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        for ifname in list(self._by_name):
            self.remove_interface(ifname)
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    @property
    def interfaces(self) -> dict[str, int]:
        return dict(self._by_name)

    def add_interface(self, ifname: str, ifindex: int) -> None:
        """Join ff02::1a on the interface (its index as seen inside the ACP namespace)."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        old = self._by_name.get(ifname)
        if old == ifindex:
            return
        if old is not None:
            self.remove_interface(ifname)
        try:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                  group_request(c.ALL_RPL_NODES, ifindex))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # already joined (a recreated interface)
                raise
        self._by_name[ifname] = ifindex
        self._by_index[ifindex] = ifname

    def remove_interface(self, ifname: str) -> None:
        ifindex = self._by_name.pop(ifname, None)
        if ifindex is None:
            return
        self._by_index.pop(ifindex, None)
        if self._sock is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP,
                                      group_request(c.ALL_RPL_NODES, ifindex))
            except OSError:
                pass  # the interface is gone, and its membership with it

    def send(self, action: Send) -> bool:
        """Send one message; False (logged at debug, counted) when the kernel refuses it."""
        ifindex = self._by_name.get(action.ifname)
        if self._sock is None or ifindex is None:
            self.counters["send_no_interface"] += 1
            return False
        scope = ifindex if action.dst.is_link_local or action.dst.is_multicast else 0
        try:
            self._sock.sendmsg([action.packet()],
                               [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo(ifindex))],
                               0, (str(action.dst), 0, 0, scope))
        except OSError as exc:  # link down, no link-local yet, buffer full: Trickle resends
            self.counters["send_errors"] += 1
            LOG.debug("send %s to %s on %s failed: %s", type(action.message).__name__,
                      action.dst, action.ifname, exc)
            return False
        self.counters["sent"] += 1
        return True

    def _readable(self) -> None:
        for _ in range(64):  # bounded: one busy socket must not starve the loop
            if self._sock is None:
                return
            try:
                data, ancdata, _flags, addr = self._sock.recvmsg(RECV_BUFFER, ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                LOG.debug("receive failed: %s", exc)
                return
            self._handle(data, ancdata, addr)

    def _handle(self, data: bytes, ancdata: list[tuple[int, int, bytes]],
                addr: tuple[str, int, int, int]) -> None:
        ifindex, hoplimit, dst = None, None, c.ALL_RPL_NODES
        for level, kind, value in ancdata:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_PKTINFO and len(value) >= 20:
                dst = ipaddress.IPv6Address(value[:16])
                ifindex = struct.unpack("=I", value[16:20])[0]
            elif kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hoplimit = struct.unpack("=i", value[:4])[0]
        src = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
        ifname = self._by_index.get(ifindex) if ifindex is not None else None
        reason = None
        if ifname is None:
            reason = "unknown_interface"
        elif len(data) < 4 or data[0] != c.ICMPV6_TYPE_RPL:
            reason = "malformed"
        else:
            reason = accepts(src, dst)
        if reason is not None:
            self.counters[f"drop_{reason}"] += 1
            LOG.debug("dropped %d octets from %s (ifindex %s, hop limit %s): %s",
                      len(data), src, ifindex, hoplimit, reason)
            return
        self.counters["received"] += 1
        if hoplimit != HOP_LIMIT:
            self.counters["received_hop_limit_not_255"] += 1  # a sender not in our profile
        assert ifname is not None
        self._receiver(ifname, src, data[1], data[4:], dst)

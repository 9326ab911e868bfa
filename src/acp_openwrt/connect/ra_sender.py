"""The RA edge: one raw ICMPv6 socket per connect interface, inside the ACP namespace.

Why our own sender and not radvd: radvd is one more daemon with its own config file to write,
reload and supervise, and it would have to run inside the ACP namespace (a second process per
node on a 128 MB box); what ACP connect needs is small and fixed (one prefix, the ACP /48 RIOs,
the ::/0 RIO with lifetime 0, answering RS), and the state (subnet, start/stop) already lives in
acpd. radvd is also not installed by default on OpenWrt (odhcpd is, and it serves the host
namespace's LANs, not ours).

The socket is bound to the interface (SO_BINDTODEVICE), lets only RS through (ICMP6_FILTER),
sends with hop limit 255 to ff02::1 (the kernel picks the interface's link-local source and fills
the checksum) and drops solicitations that arrive with a hop limit below 255 (RFC 4861 §6.1.1).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import Counter

from .. import netns
from ..rpl.transport import ICMP6_FILTER, icmp6_filter
from .ra import ND_ROUTER_SOLICIT, NdError, RaContent, RaSchedule, build_ra, parse_rs

LOG = logging.getLogger("acpd.connect.ra")
ALL_NODES = "ff02::1"
HOP_LIMIT = 255


class RaSender:
    """Advertises one connect subnet on one interface until stopped."""

    def __init__(self, namespace: str, ifname: str, ifindex: int, content: RaContent,
                 schedule: RaSchedule) -> None:
        self.namespace = namespace
        self.ifname = ifname
        self.ifindex = ifindex
        self.content = content
        self.schedule = schedule
        self.counters: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        sock = netns.socket_in(self.namespace, socket.AF_INET6, socket.SOCK_RAW,
                               socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter(ND_ROUTER_SOLICIT))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._task = asyncio.ensure_future(self._run())

    async def close(self, final: bool = True) -> None:
        """Stop; with `final`, one last RA with lifetimes 0 first (RFC 4861 §6.2.5)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sock is None:
            return
        if final:
            self._send(build_ra(self.content, final=True))
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None

    def _send(self, message: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(message, (ALL_NODES, 0, 0, self.ifindex))
            self.counters["ra_sent"] += 1
        except OSError as exc:  # link down, no link-local yet: the next period tries again
            self.counters["send_errors"] += 1
            LOG.debug("RA on %s not sent: %s", self.ifname, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            delay = self.schedule.next_time() - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                except TimeoutError:
                    pass
            if self.schedule.poll(loop.time()):
                self._send(build_ra(self.content))

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data, ancillary, _flags, addr = self._sock.recvmsg(1500, socket.CMSG_SPACE(4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            LOG.debug("RS socket on %s: %s", self.ifname, exc)
            return
        hop_limit = next((struct.unpack("=i", d[:4])[0] for level, kind, d in ancillary
                          if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT), None)
        if hop_limit != HOP_LIMIT:
            self.counters["rs_dropped"] += 1
            return
        try:
            parse_rs(data, ipaddress.IPv6Address(addr[0].split("%")[0]))
        except (NdError, ValueError):
            self.counters["rs_dropped"] += 1
            return
        self.counters["rs_received"] += 1
        self.schedule.solicited(asyncio.get_running_loop().time())
        self._wake.set()

"""The liveness probe's socket: ICMPv6 echo requests to ff02::1 on a DULL link, replies heard.

One raw ICMPv6 socket in the DULL namespace (acpd is root there) serves every DULL link: a
request names its link by the scope id of ff02::1, a reply's link is the scope id of its
link-local source. The kernel computes ICMPv6 checksums and, with ICMP6_FILTER, hands us
only echo replies; our identifier tells our replies from other pings'.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable

from ..netns import socket_in

LOG = logging.getLogger("acpd.discovery.echo")
ALL_NODES = "ff02::1"
ECHO_REQUEST, ECHO_REPLY = 128, 129
ICMP6_FILTER = 1            # linux/icmpv6.h, level IPPROTO_ICMPV6
READ_BATCH = 256            # replies read per wake-up: a reply flood cannot hold the loop


def reply_filter() -> bytes:
    """struct icmp6_filter passing only echo replies (a set bit blocks its type)."""
    words = [0xFFFFFFFF] * 8
    words[ECHO_REPLY >> 5] &= ~(1 << (ECHO_REPLY & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


def echo_request(ident: int, seq: int) -> bytes:
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq) + b"acp-liveness"


def parse_reply(data: bytes, ident: int) -> bool:
    """An echo reply carrying our identifier (anything else: not ours)."""
    if len(data) < 8:
        return False
    kind, _code, _sum, got = struct.unpack_from("!BBHH", data)
    return kind == ECHO_REPLY and got == ident


class EchoSocket:
    """Send probes, call `on_reply(source, ifindex)` for each reply to one of ours."""

    def __init__(self, namespace: str, on_reply: Callable[[str, int], None]) -> None:
        self.namespace = namespace
        self.on_reply = on_reply
        self.ident = int.from_bytes(os.urandom(2), "big")
        self._seq = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = {"sent": 0, "send_errors": 0, "replies": 0, "not_ours": 0}

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = await self._loop.run_in_executor(
            None, socket_in, self.namespace, socket.AF_INET6, socket.SOCK_RAW,
            socket.IPPROTO_ICMPV6)
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, reply_filter())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def probe(self, ifindex: int) -> None:
        if self._sock is None:
            return
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self._sock.sendto(echo_request(self.ident, self._seq), (ALL_NODES, 0, 0, ifindex))
            self.counters["sent"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            LOG.debug("echo to all nodes on ifindex %d: %s", ifindex, exc)

    def _readable(self) -> None:
        sock = self._sock
        for _ in range(READ_BATCH):
            if sock is None:
                return
            try:
                data, addr = sock.recvfrom(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                LOG.debug("echo socket: %s", exc)
                return
            if not parse_reply(data, self.ident):
                self.counters["not_ours"] += 1
                continue
            self.counters["replies"] += 1
            source = addr[0].split("%", 1)[0]
            self.on_reply(source, addr[3])

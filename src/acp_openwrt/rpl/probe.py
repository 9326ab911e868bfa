"""Which ACP addresses answer from inside a namespace: one ICMPv6 echo each, sent together.

For the RPL tests and the convergence benchmark (all-pairs reachability of 50 nodes is 2450
echoes: one `ping` process per pair would take longer than convergence itself), and for
diagnostics. The kernel answers echo requests itself, so no responder is needed.
"""
from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterable

from .. import netns
from .transport import ICMP6_FILTER, icmp6_filter

ECHO_REQUEST, ECHO_REPLY = 128, 129


class EchoProber:
    """A raw ICMPv6 socket in `namespace`, sourcing echoes from `source` (the ACP address)."""

    def __init__(self, namespace: str, source: ipaddress.IPv6Address | str) -> None:
        self.source = ipaddress.IPv6Address(source)
        self._sock = netns.socket_in(namespace, socket.AF_INET6, socket.SOCK_RAW,
                                     socket.IPPROTO_ICMPV6)
        try:
            self._sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter(ECHO_REPLY))
            self._sock.bind((str(self.source), 0))
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self._ident = (os.getpid() ^ id(self)) & 0xFFFF
        self._round = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> EchoProber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sweep(self, targets: Iterable[ipaddress.IPv6Address | str],
              timeout: float = 1.0) -> set[ipaddress.IPv6Address]:
        """Echo every target once; the set of those that replied within `timeout` seconds."""
        self._round = (self._round + 1) & 0xFFFF
        wanted = {ipaddress.IPv6Address(t): i for i, t in enumerate(targets)}
        tag = struct.pack("!H", self._round)
        for address, seq in wanted.items():
            packet = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self._ident, seq & 0xFFFF) + tag
            try:
                self._sock.sendto(packet, (str(address), 0))
            except OSError:
                pass  # no route (yet): simply not answered
        answered: set[ipaddress.IPv6Address] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < len(wanted):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                break
            while True:
                try:
                    data, addr = self._sock.recvfrom(1500)
                except (BlockingIOError, InterruptedError):
                    break
                if len(data) < 10 or data[0] != ECHO_REPLY:
                    continue
                ident, seq = struct.unpack("!HH", data[4:8])
                source = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
                if ident == self._ident and data[8:10] == tag and wanted.get(source) == seq:
                    answered.add(source)
        return answered

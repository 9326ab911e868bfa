"""Link state of the ACP namespace's interfaces, pushed by rtnetlink (RTMGRP_LINK), never polled.

The channel part publishes ChannelDown when a peer goes away, but a link can also lose carrier
or be set down under a live channel; RPL must then give up the neighbours on it at once (RFC 8994
§6.12.1.5: link loss triggers parent reselection immediately), not after the DIO silence timeout.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from .. import netns

LOG = logging.getLogger("acpd.rpl.linkstate")
NETLINK_ROUTE = 0
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
# (ifindex, usable: up with carrier; None when the link was deleted)
LinkCallback = Callable[[int, "bool | None"], None]


def usable(flags: int) -> bool:
    """Administratively up and with carrier: packets can pass."""
    return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)


class LinkWatcher:
    def __init__(self, namespace: str, callback: LinkCallback) -> None:
        self.namespace = namespace
        self._callback = callback
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._marshal = MarshalRtnl()

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        sock = netns.socket_in(self.namespace, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
            self._loop = loop or asyncio.get_running_loop()
            self._loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ENOBUFS: events lost; the next change still arrives
                LOG.debug("link events: %s", exc)
                return
            try:
                messages = list(self._marshal.parse(data))
            except Exception as exc:  # a parser problem must not end the watch
                LOG.debug("undecodable link event: %s", exc)
                continue
            for msg in messages:
                kind = msg["header"]["type"]
                if kind == RTM_NEWLINK:
                    self._callback(int(msg["index"]), usable(int(msg["flags"])))
                elif kind == RTM_DELLINK:
                    self._callback(int(msg["index"]), None)

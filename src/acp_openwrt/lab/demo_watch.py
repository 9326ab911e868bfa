"""Watching a lab ACP form, for the demo: each node's `status`, polled, turned into one line
per new fact (enrolled, channel up, joined the DODAG), and ICMPv6 echoes with their RTTs."""
from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.netns import socket_in

ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129


@dataclass
class FormationWatch:
    """`poll()` asks every node once and reports what is new; true once the ACP has formed:
    every node enrolled, a secure channel up on every link, every node in the DODAG."""

    lab: AcpdLab
    nodes: Sequence[str]
    root: str
    report: Callable[[str], None]
    addresses: dict[str, str] = field(default_factory=dict)  # node -> ACP address
    node_names: dict[str, str] = field(default_factory=dict)  # acp-node-name -> node
    channels: set[frozenset[str]] = field(default_factory=set)
    joined: set[str] = field(default_factory=set)
    answering: set[str] = field(default_factory=set)
    links: int = 0

    def __post_init__(self) -> None:
        assert self.lab.topology is not None
        self.links = len(self.lab.topology.links)

    def poll(self) -> bool:
        for name in self.nodes:
            try:
                status = self.lab.ask(name, "status")
            except Exception:  # not (yet) answering: asked again next round
                continue
            if name not in self.answering:
                self.answering.add(name)
                if not status.get("identity"):
                    self.report(f"{name}: acpd up, no LDevID: a BRSKI pledge, "
                                "looking for a join proxy")
            self._identity(name, status.get("identity"))
            if name in self.addresses:
                self._channels(name, status.get("channels") or {})
                self._rpl(name, status.get("rpl") or {}, status.get("channels") or {})
        return self.done()

    def done(self) -> bool:
        return (len(self.addresses) == len(self.nodes) and len(self.channels) == self.links
                and self.joined == set(self.nodes))

    def missing(self) -> str:
        """What is not there yet, in words (for the timeout message)."""
        gaps = [f"{n} not enrolled" for n in self.nodes if n not in self.addresses]
        gaps += [f"{n} not in the DODAG" for n in self.nodes
                 if n in self.addresses and n not in self.joined]
        if len(self.channels) < self.links:
            gaps.append(f"{len(self.channels)} of {self.links} channels up")
        return "; ".join(gaps) or "nothing"

    def _identity(self, name: str, identity: Any) -> None:
        if name in self.addresses or not isinstance(identity, dict):
            return
        self.addresses[name] = str(identity.get("acp_address"))
        self.node_names[str(identity.get("acp_node_name"))] = name
        if name != self.root:
            self.report(f"{name} enrolled through BRSKI: ACP address {self.addresses[name]}")

    def _peer(self, channel: dict[str, Any]) -> str:
        return self.node_names.get(str(channel.get("peer_node_name")), str(channel.get("peer")))

    def _channels(self, name: str, part: dict[str, Any]) -> None:
        for channel in part.get("channels") or []:
            if channel.get("state") != "up":
                continue
            pair = frozenset((name, self._peer(channel)))
            if pair not in self.channels:
                self.channels.add(pair)
                self.report(f"secure channel {name} - {self._peer(channel)} up "
                            f"({channel.get('interface')}, {channel.get('role')} on {name})")

    def _rpl(self, name: str, rpl: dict[str, Any], part: dict[str, Any]) -> None:
        if name in self.joined or rpl.get("rank") is None:
            return
        if name == self.root:
            self.joined.add(name)
            self.report(f"RPL: {name} is the DODAG root, rank {rpl.get('rank')}")
            return
        preferred = [p for p in rpl.get("parents") or [] if p.get("preferred")]
        if not preferred:
            return
        by_interface = {c.get("interface"): c for c in part.get("channels") or []}
        channel = by_interface.get(preferred[0].get("ifname"))
        parent = self._peer(channel) if channel else str(preferred[0].get("address"))
        self.joined.add(name)
        self.report(f"RPL: {name} joined the DODAG: rank {rpl.get('rank')}, parent {parent} "
                    f"(via {preferred[0].get('ifname')})")


def echo_rtts(ns: str, source: str, target: str, count: int = 3,
              timeout: float = 2.0) -> list[float | None]:
    """ICMPv6 echoes from `source` inside `ns`, one at a time: each round-trip time in s, or
    None for an echo not answered within `timeout`."""
    ident = os.getpid() & 0xFFFF
    rtts: list[float | None] = []
    with socket_in(ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.bind((source, 0))
        for seq in range(1, count + 1):
            sent = time.monotonic()  # the kernel fills in the ICMPv6 checksum on raw sockets
            sock.sendto(struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + b"acp-demo",
                        (target, 0))
            rtts.append(_await_reply(sock, ident, seq, sent, timeout))
    return rtts


def _await_reply(sock: socket.socket, ident: int, seq: int, sent: float,
                 timeout: float) -> float | None:
    while (left := sent + timeout - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1500)
        except TimeoutError:
            return None
        if len(data) >= 8 and data[0] == ICMP6_ECHO_REPLY and \
                struct.unpack("!HH", data[4:8]) == (ident, seq):
            return time.monotonic() - sent
    return None

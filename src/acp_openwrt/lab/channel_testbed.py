"""A bench of ACP nodes for the channel tests and the benchmark (guest kernel only).

Each node gets a DULL and an ACP namespace, a certificate from a lab TestCA (ACP address in the
acp-node-name and, by default, in an iPAddress SAN) and a NodeContext; `link()` plugs a veth
between two DULL namespaces with fixed link-local addresses. The channel service is driven
directly: tests publish AdjacencyUp themselves (DULL discovery is a separate part).
`close()` stops services and removes every namespace (which ends the charons inside).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from .. import netns
from ..channels.connection import ChannelTimers
from ..channels.part import ChannelPart
from ..channels.strongswan_conf import CharonSettings
from ..config import AcpConfig
from ..control.server import ControlServer
from ..events import AdjacencyUp, EventBus
from ..identity.address import name_for_address, zone_address
from ..identity.summary import identity_summary
from ..node_context import NodeContext
from .pki import NodeCredentials, TestCA

IFA_F_NODAD = 0x02
ADDRGENMODE_NONE = 1
FAST_TIMERS = ChannelTimers(dpd_delay=1)
FAST_CHARON = CharonSettings(vici_socket="/run/charon.vici", retransmit_timeout=1.0,
                             retransmit_tries=2, retransmit_base=1.4)


def control_path(config: AcpConfig) -> Path:
    assert config.control_socket is not None  # AcpConfig derives it from run_dir
    return config.control_socket


@dataclass
class BedNode:
    name: str
    number: int
    dull: str
    acp: str
    ctx: NodeContext
    creds: NodeCredentials
    address: str
    service: ChannelPart | None = None
    links: dict[str, str] = field(default_factory=dict)   # our DULL ifname -> peer's LL

    def new_service(self, **kwargs: Any) -> ChannelPart:
        kwargs.setdefault("timers", FAST_TIMERS)
        kwargs.setdefault("charon_settings", FAST_CHARON)
        kwargs.setdefault("initial_retry", 2.0)
        kwargs.setdefault("adoption_grace", 20.0)
        self.ctx.control = ControlServer(control_path(self.ctx.config))
        self.service = ChannelPart(self.ctx, **kwargs)
        return self.service

    def adjacency_up(self, dull_ifname: str) -> None:
        self.ctx.bus.publish(AdjacencyUp(self.links[dull_ifname], dull_ifname, ("IKEv2",), 500))


class Testbed:
    __test__ = False  # not a pytest class

    def __init__(self, root: Path, domain: str = "acp.example.com", prefix: str | None = None):
        self.root = root
        self.domain = domain
        self.prefix = prefix or "ch" + secrets.token_hex(3)
        self.ca = TestCA.create(root / "pki", domain=domain)
        self.nodes: dict[str, BedNode] = {}
        self._namespaces: list[str] = []

    def add_node(self, name: str, *, ca: TestCA | None = None, ip_san: bool = True,
                 rfc822: bool = False, **cert: Any) -> BedNode:
        """`cert`: more TestCA.issue_node options (not_before, not_after, ...)."""
        number = len(self.nodes) + 1
        issuer = ca or self.ca
        address = zone_address("", registrar_id=0x1234, node_number=number)
        node_name = name_for_address(address, issuer.domain).format()
        creds = issuer.issue_node(name, acp_node_name=node_name,
                                  ip_address=address.address if ip_san else None,
                                  rfc822_name=node_name if rfc822 else None, **cert)
        dull, acp = f"{self.prefix}-{name}-dull", f"{self.prefix}-{name}-acp"
        for ns in (dull, acp):
            netns.create_namespace(ns)
            self._namespaces.append(ns)
            netns.call_in(ns, _lo_up)
        run = self.root / name
        config = AcpConfig(ldevid_cert=creds.cert_path, ldevid_key=creds.key_path,
                           trust_anchors=creds.anchor_path, namespace_dull=dull,
                           namespace_acp=acp, run_dir=run / "run", log_dir=run / "log")
        from ..identity.node_name import parse_acp_node_name
        ctx = NodeContext(config, EventBus(), ControlServer(control_path(config)),
                          identity_summary(parse_acp_node_name(node_name)))
        node = BedNode(name, number, dull, acp, ctx, creds, str(address.address))
        self.nodes[name] = node
        return node

    def link(self, a: BedNode, b: BedNode) -> tuple[str, str]:
        """A veth between the two DULL namespaces; returns (ifname in a, ifname in b)."""
        if_a, if_b = f"to-{b.name}"[:15], f"to-{a.name}"[:15]
        ll_a = f"fe80::{a.number}:{b.number}:1"
        ll_b = f"fe80::{a.number}:{b.number}:2"
        netns.call_in(a.dull, _add_veth, if_a, if_b, b.dull)
        netns.call_in(a.dull, _configure_link, if_a, ll_a)
        netns.call_in(b.dull, _configure_link, if_b, ll_b)
        a.links[if_a], b.links[if_b] = ll_b, ll_a
        return if_a, if_b

    async def close(self) -> None:
        for node in self.nodes.values():
            if node.service is not None:
                with contextlib.suppress(Exception):
                    await node.service.stop()
        self.remove_namespaces()

    def remove_namespaces(self) -> None:
        for ns in reversed(self._namespaces):
            with contextlib.suppress(Exception):
                netns.remove_namespace(ns)
        self._namespaces.clear()


def run_scenario(scenario: Callable[[Testbed], Awaitable[None]], root: Path) -> None:
    """Run one async scenario on a fresh testbed; everything is removed afterwards."""
    async def main() -> None:
        bed = Testbed(root)
        try:
            await scenario(bed)
        except BaseException:
            print_charon_logs(root)
            raise
        finally:
            await bed.close()
    asyncio.run(main())


def print_charon_logs(root: Path) -> None:
    """What each node's charon saw, on stdout: in a failing test's report."""
    for log in sorted(root.glob("*/log/charon.log")):
        print(f"--- {log.relative_to(root)} (tail) ---\n"
              f"{log.read_text(errors='replace')[-6000:]}")


def _lo_up() -> None:
    """lo up; links made later get no automatic link-local and no DAD (fixed addresses)."""
    for key, value in (("addr_gen_mode", ADDRGENMODE_NONE), ("accept_dad", 0)):
        with open(f"/proc/sys/net/ipv6/conf/default/{key}", "w") as fh:
            fh.write(str(value))
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _add_veth(ifname: str, peer_ifname: str, peer_ns: str) -> None:
    """On a thread in the first namespace (pyroute2's IPRoute must not run on the loop's thread)."""
    with IPRoute() as ipr:
        ipr.link("add", ifname=ifname, kind="veth",
                 peer={"ifname": peer_ifname, "net_ns_fd": peer_ns})


def _configure_link(ifname: str, link_local: str) -> None:
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        ipr.addr("add", index=index, address=link_local, prefixlen=64, flags=IFA_F_NODAD)
        ipr.link("set", index=index, state="up")


def route_via(node: BedNode, peer: BedNode, ifname: str) -> None:
    """A static /128 to the peer's ACP loopback over the channel interface (RPL comes later)."""
    def add() -> None:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=ifname)
            ipr.route("replace", dst=f"{peer.address}/128", oif=index, family=socket.AF_INET6)
    netns.call_in(node.acp, add)


ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129


def ping(ns: str, source: str, target: str, count: int = 3, timeout: float = 5.0) -> int:
    """ICMPv6 echoes from `source` inside `ns` (no ping binary needed); replies received."""
    sock = netns.socket_in(ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.bind((source, 0))
        ident, replies = os.getpid() & 0xFFFF, set()
        for seq in range(count):
            # The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
            sock.sendto(struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + b"acp",
                        (target, 0))
            deadline = time.monotonic() + timeout
            while seq not in replies and time.monotonic() < deadline:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    data, _ = sock.recvfrom(1500)
                except TimeoutError:
                    break
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[:8])
                if kind == ICMPV6_ECHO_REPLY and rid == ident:
                    replies.add(rseq)
        return len(replies)
    finally:
        sock.close()

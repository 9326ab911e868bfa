"""RPL next to unstrung, both ways, with a test double that speaks exactly what sunshine sends
(../shared/spec/rpl-vectors-unstrung.md): its DIS and DIO with hop limit 1 to ff02::1a, its
DIO with MOP 3 and no DODAG Configuration, its DAO without Transit Information; and that
answers as sunshine does (a DAO-ACK with the D flag, routes to what a DAO announces, a default
route once its own DAO is acknowledged).

The ACP addresses are the capture's: the project root was fde3:b0c4:4298::1234:2 (also the
DODAGID in unstrung's DIO and DAO) and the unstrung member fde3:b0c4:4298::1234:4.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from acp_openwrt import events
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.lab.topology import Node, line
from acp_openwrt.node_context import NodeContext
from acp_openwrt.rpl.installer import RTPROT_ACP_RPL
from acp_openwrt.rpl.options import DodagConfiguration
from acp_openwrt.rpl.part import RplPart
from acp_openwrt.rpl.probe import EchoProber
from acp_openwrt.rpl.transport import ICMP6_FILTER, icmp6_filter

# rpl-vectors-unstrung.md, verbatim (the kernel rewrites the checksum for these addresses).
UNSTRUNG_DIO = [bytes.fromhex(
    "9b01" + csum + "0001000198" + dtsn + "0000fde3b0c4429800000000000012340002"
    "081e3040000000000000000000000000fd00123400000000000000000000000000000000")
    for csum, dtsn in (("1660", "01"), ("165f", "02"))]
UNSTRUNG_DIS = bytes.fromhex("9b00550700000713004000000000000000000000000000000000000000000000")
UNSTRUNG_DAO = [bytes.fromhex(
    "9b02" + csum + "00c000" + seq + "fde3b0c442980000000000001234000205120080"
    "fde3b0c442980000000000001234000400000000") for csum, seq in (("e407", "02"), ("e406", "03"))]
ROOT = ipaddress.IPv6Address("fde3:b0c4:4298::1234:2")
MEMBER = ipaddress.IPv6Address("fde3:b0c4:4298::1234:4")
FAST = DodagConfiguration(dio_interval_min=6, dio_interval_doublings=6)
ALL_RPL_NODES = "ff02::1a"


class UnstrungDouble:
    """One end of a link speaking sunshine's bytes through a raw ICMPv6 socket in a namespace."""

    def __init__(self, node: Node, ifname: str, address: ipaddress.IPv6Address) -> None:
        self.node = node
        self.ifname = ifname
        self.address = address
        self.ifindex = node.index(ifname)
        self.link_local = ipaddress.IPv6Address(node.link_local(ifname))
        node.add_address("lo", str(address), 128)
        self.sock = node.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter(155))
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                             socket.inet_pton(socket.AF_INET6, ALL_RPL_NODES)
                             + struct.pack("=I", self.ifindex))
        self.routes: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, message: bytes, dst: str | ipaddress.IPv6Address, hop_limit: int) -> None:
        self.sock.sendmsg([message], [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT,
                                       struct.pack("=i", hop_limit))],
                          0, (str(dst), 0, 0, self.ifindex))

    def receive(self, code: int, timeout: float) -> tuple[ipaddress.IPv6Address, bytes] | None:
        """The next type-155 message with this code: (source, whole ICMPv6 message)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            data, _anc, _flags, addr = self.sock.recvmsg(2048, 256)
            if len(data) >= 4 and data[1] == code:
                return ipaddress.IPv6Address(addr[0].split("%")[0]), data
        return None

    def route(self, prefix: str, via: ipaddress.IPv6Address) -> None:
        """A route as sunshine adds it (add_route_to_node, add_parent_route_to_default)."""
        network = ipaddress.IPv6Network(prefix)
        with self.node.iproute() as ipr:
            ipr.route("replace", dst=str(network.network_address), dst_len=network.prefixlen,
                      family=socket.AF_INET6, gateway=str(via), oif=self.ifindex)
        self.routes.append(prefix)


def dao_options(message: bytes) -> list[tuple[int, bytes]]:
    """A DAO's options as (type, data), Pad1 skipped; read by hand, not with the codec under
    test."""
    body = message[4:]
    pos = 20 if body[1] & 0x40 else 4
    found = []
    while pos < len(body):
        if body[pos] == 0:
            pos += 1
            continue
        found.append((body[pos], body[pos + 2:pos + 2 + body[pos + 1]]))
        pos += 2 + body[pos + 1]
    return found


def dao_targets(message: bytes) -> list[str]:
    """The RPL Targets of a DAO, as sunshine's receive_dao reads them (Transits ignored)."""
    targets = []
    for kind, data in dao_options(message):
        if kind == 5:
            raw = data[2:2 + (data[1] + 7) // 8].ljust(16, b"\0")
            targets.append(f"{ipaddress.IPv6Address(raw)}/{data[1]}")
    return targets


def dao_ack(dao: bytes, dodag: ipaddress.IPv6Address) -> bytes:
    """sunshine's build_daoack: instance, D flag, the DAO's sequence, status 0, the DODAGID."""
    return bytes([155, 3, 0, 0, dao[4], 0x80, dao[7], 0]) + dodag.packed


def kernel_routes(node: Node) -> dict[str, str | None]:
    """RPL's routes (proto 155) in a namespace: prefix -> gateway."""
    with node.iproute() as ipr:
        return {f"{m.get_attr('RTA_DST') or '::'}/{m['dst_len']}": m.get_attr("RTA_GATEWAY")
                for m in ipr.get_routes(family=socket.AF_INET6, table=254)
                if m["proto"] == RTPROT_ACP_RPL}


def service(node: Node, tmp: Path, address: ipaddress.IPv6Address, root: bool) -> RplPart:
    config = AcpConfig(dodag_root=root, namespace_acp=node.netns, run_dir=tmp / node.name,
                       log_dir=tmp / node.name)
    ctx = NodeContext(config, events.EventBus(), ControlServer(tmp / f"{node.name}.sock"),
                      identity={"acp_address": str(address), "prefix_length": None})
    return RplPart(ctx, dodag=FAST if root else None)


async def eventually(check, within: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def probers(*pairs: tuple[Node, ipaddress.IPv6Address]) -> Iterator[list[EchoProber]]:
    opened = [EchoProber(node.netns, address) for node, address in pairs]
    try:
        yield opened
    finally:
        for prober in opened:
            prober.close()


def test_unstrung_member_joins_a_project_root_and_routes(topology, tmp_path: Path) -> None:
    topo = topology(line(2))
    n1, n2 = topo["n1"], topo["n2"]
    n1.add_address("lo", str(ROOT), 128)
    root_if, member_if = n1.ifname("n2"), n2.ifname("n1")
    double = UnstrungDouble(n2, member_if, MEMBER)

    async def main() -> None:
        root = service(n1, tmp_path, ROOT, root=True)
        await root.start()
        try:
            root.ctx.bus.publish(events.ChannelUp("", root_if, root_if, ""))
            await eventually(lambda: root_if in root.status()["interfaces"], 5.0,
                             "the root did not take up its interface")
            await asyncio.to_thread(double.send, UNSTRUNG_DIS, ALL_RPL_NODES, 1)
            heard = await asyncio.to_thread(double.receive, 1, 5.0)
            assert heard is not None, "the project root sent no DIO"
            root_ll, dio = heard
            assert dio[8] & 0x38 == 2 << 3 and dio[28] == 4  # strict out: MOP 2, configuration

            await asyncio.to_thread(double.send, UNSTRUNG_DAO[0], root_ll, 255)
            answer = await asyncio.to_thread(double.receive, 3, 2.0)
            assert answer is not None, "no DAO-ACK"
            src, ack = answer
            # instance 0, D set, DAOSequence 2 echoed, status 0, the DODAGID sunshine looks up
            assert (src, ack[4:8], ack[8:24]) == (root_ll, bytes([0, 0x80, 2, 0]), ROOT.packed)
            # What sunshine does once its DAO is acknowledged (commit_parent, grounded DODAG).
            await asyncio.to_thread(double.route, "::/0", root_ll)

            target = f"{MEMBER}/128"
            routes = await eventually(lambda: (r := kernel_routes(n1)).get(target) and r, 5.0,
                                      "the root installed no route to the unstrung member")
            assert routes[target] == str(double.link_local)
            reply = await root.ctx.control.dispatch(b'{"cmd": "rpl"}')
            status = reply["result"]
            assert status["children"] == [{"address": str(double.link_local), "ifname": root_if,
                                           "targets": [target]}]
            counters = status["counters"]
            assert counters["dao_without_transit"] == 1 and counters["dao_rejected"] == 0
            assert counters["transport_received_hop_limit_not_255"] >= 1  # the DIS

            with probers((n1, ROOT), (n2, MEMBER)) as (at_root, at_member):
                assert await asyncio.to_thread(at_root.sweep, [MEMBER], 2.0) == {MEMBER}
                assert await asyncio.to_thread(at_member.sweep, [ROOT], 2.0) == {ROOT}

            # The next DAO (DAOSequence 3) refreshes the route and is acknowledged in turn.
            await asyncio.to_thread(double.send, UNSTRUNG_DAO[1], root_ll, 255)
            answer = await asyncio.to_thread(double.receive, 3, 2.0)
            assert answer is not None and answer[1][6:8] == bytes([3, 0])
            routes = await asyncio.to_thread(kernel_routes, n1)  # pyroute2: off the loop
            assert routes[target] == str(double.link_local)
        finally:
            await root.stop()

    try:
        asyncio.run(main())
        assert kernel_routes(n1) == {}
    finally:
        double.close()


def test_project_member_joins_an_unstrung_root_and_routes(topology, tmp_path: Path) -> None:
    topo = topology(line(2))
    n1, n2 = topo["n1"], topo["n2"]
    n2.add_address("lo", str(MEMBER), 128)
    root_if, member_if = n1.ifname("n2"), n2.ifname("n1")
    double = UnstrungDouble(n1, root_if, ROOT)
    stop = threading.Event()
    seen: list[bytes] = []

    def unstrung_root() -> None:
        """DIOs with hop limit 1 on a fixed interval (DTSN 1, then 2), a DIO for a DIS, and for
        each DAO a route per target via its sender and, with K, a DAO-ACK."""
        double.send(UNSTRUNG_DIO[0], ALL_RPL_NODES, 1)
        next_dio = time.monotonic() + 0.3
        while not stop.is_set():
            ready = select.select([double.sock], [], [], 0.05)[0]
            if ready:
                data, _anc, _flags, addr = double.sock.recvmsg(2048, 256)
                src = ipaddress.IPv6Address(addr[0].split("%")[0])
                if data[1] == 0:
                    double.send(UNSTRUNG_DIO[1], ALL_RPL_NODES, 1)
                elif data[1] == 2:
                    for target in dao_targets(data):
                        double.route(target, src)
                    seen.append(data)  # after the routes: the test pings once it sees a DAO
                    if data[5] & 0x80:
                        double.send(dao_ack(data, ROOT), src, 64)
            if time.monotonic() >= next_dio:
                double.send(UNSTRUNG_DIO[1], ALL_RPL_NODES, 1)
                next_dio = time.monotonic() + 0.5

    async def main() -> None:
        member = service(n2, tmp_path, MEMBER, root=False)
        await member.start()
        responder = threading.Thread(target=unstrung_root, daemon=True)
        responder.start()
        try:
            member.ctx.bus.publish(events.ChannelUp("", member_if, member_if, ""))
            routes = await eventually(lambda: (r := kernel_routes(n2)).get("::/0") and r, 5.0,
                                      "no default route towards the unstrung root")
            assert routes["::/0"] == str(double.link_local)
            status = member.status()
            assert (status["role"], status["dodag_id"], status["mop"]) == \
                ("member", str(ROOT), 3)
            assert [p["address"] for p in status["parents"]] == [str(double.link_local)]
            assert status["rank"] == 1024
            counters = status["counters"]
            assert counters["dio_without_configuration"] >= 1
            assert counters["dio_rank_below_root"] >= 1
            assert counters["transport_received_hop_limit_not_255"] >= 1

            # Our DAO, strict: K, no D, a Target and a Transit; sunshine routed it.
            await eventually(lambda: bool(seen), 5.0, "no DAO reached the unstrung root")
            dao = seen[0]
            assert dao[5] == 0x80 and dao_targets(dao) == [f"{MEMBER}/127"]
            assert [kind for kind, _ in dao_options(dao)] == [5, 6]
            assert dao_options(dao)[1][1][3] == 0xFF  # Path Lifetime: RFC6550_DEFAULTS' infinite
            with probers((n2, MEMBER), (n1, ROOT)) as (at_member, at_root):
                assert await asyncio.to_thread(at_member.sweep, [ROOT], 2.0) == {ROOT}
                assert await asyncio.to_thread(at_root.sweep, [MEMBER], 2.0) == {MEMBER}
            await asyncio.sleep(1.0)  # acknowledged DAOs are not retried, the parent stays
            counters = member.status()["counters"]
            assert counters["dao_retransmitted"] == 0 and counters["dao_ack_rejections"] == 0
            assert member.status()["parents"][0]["address"] == str(double.link_local)
        finally:
            stop.set()
            responder.join(5)
            await member.stop()

    try:
        asyncio.run(main())
        assert kernel_routes(n2) == {}
    finally:
        double.close()

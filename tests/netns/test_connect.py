"""ACP connect end to end: devices behind a connect interface, reached from another ACP node.

Namespaces: `a` and `b` play the ACP namespaces of two nodes, joined by a plain veth standing in
for the secure channel (RplPart on both, b is the DODAG root); `h` plays a's host namespace,
where the connect devices `conn6` and `conn4` start; `d6` is an IPv6 device that autoconfigures
from a's RAs (an RFC 4191 "type C" host); `d4` an IPv4-only device with TCP and UDP echo
services. A packet capture runs on both device links for the whole test.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acp_openwrt import events, netns
from acp_openwrt.config import AcpConfig
from acp_openwrt.connect import interface
from acp_openwrt.connect.addressing import manual_prefix
from acp_openwrt.connect.config import ConnectConfig, Forward
from acp_openwrt.connect.part import ConnectPart
from acp_openwrt.control.server import ControlServer
from acp_openwrt.identity.address import zone_address
from acp_openwrt.lab.topology import SpecBuilder, Topology
from acp_openwrt.node_context import NodeContext
from acp_openwrt.rpl import constants as rplc
from acp_openwrt.rpl.options import DodagConfiguration
from acp_openwrt.rpl.part import RplPart
from acp_openwrt.rpl.probe import EchoProber

RSUB = "acp.example.com"
FAST = DodagConfiguration(dio_interval_min=6, dio_interval_doublings=6)
ADDR_A = zone_address(RSUB, 7, 1).address
ADDR_B = zone_address(RSUB, 7, 2).address
NET6 = manual_prefix(ADDR_A, 1)
NET4 = manual_prefix(ADDR_A, 2)
TCP_PORT, UDP_PORT = 7007, 7008
ETH_P_ALL = 0x0003


def spec():  # type: ignore[no-untyped-def]
    return (SpecBuilder().node("a").node("b").node("h").node("d6").node("d4")
            .link("a", "b", ifname_a="eth0", ifname_b="eth0")
            .link("h", "d6", ifname_a="conn6", ifname_b="eth0")
            .link("h", "d4", ifname_a="conn4", ifname_b="eth0")
            .build(dad=False))


class Capture:
    """Every IPv6 frame on one link, classified; a thread reading an AF_PACKET socket."""

    def __init__(self, namespace: str, ifname: str) -> None:
        self.sock = netns.socket_in(namespace, socket.AF_PACKET, socket.SOCK_RAW,
                                    socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError as exc:  # ENETDOWN while the device's link flaps: keep listening
                if exc.errno == errno.ENETDOWN:
                    continue
                return
            if frame[12:14] != b"\x86\xdd" or len(frame) < 58:
                continue
            nh, payload = frame[20], frame[54:]
            if nh == 58:
                self.seen[f"icmp6:{payload[0]}"] += 1
                source = ipaddress.IPv6Address(frame[22:38])
                self.seen[f"icmp6:{payload[0]}:{source}"] += 1
            elif nh == 17:
                self.seen[f"udp:{int.from_bytes(payload[2:4], 'big')}"] += 1
            elif nh == 6:
                self.seen[f"tcp:{int.from_bytes(payload[2:4], 'big')}"] += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class EchoServers:
    """TCP and UDP echo in the IPv4 device (sockets made inside it, served by threads)."""

    def __init__(self, namespace: str) -> None:
        self.tcp = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", TCP_PORT))
        self.tcp.listen(8)
        self.tcp.settimeout(0.1)
        self.udp = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", UDP_PORT))
        self.udp.settimeout(0.1)
        self.peers: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._tcp, self._udp)]
        for t in self._threads:
            t.start()

    def _tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer)
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    while data := conn.recv(4096):
                        conn.sendall(data)

    def _udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.udp.sendto(data, peer)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.tcp.close()
        self.udp.close()


def context(namespace: str, address: ipaddress.IPv6Address, tmp: Path, root: bool) -> NodeContext:
    config = AcpConfig(dodag_root=root, namespace_acp=namespace, run_dir=tmp, log_dir=tmp)
    return NodeContext(config, events.EventBus(), ControlServer(tmp / "c.sock"),
                       identity={"acp_address": str(address), "prefix_length": None,
                                 "ula_prefix": str(ipaddress.IPv6Network((address, 48),
                                                                        strict=False))})


def global_addresses(node: Any, ifname: str) -> list[ipaddress.IPv6Address]:
    with node.iproute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        return [ipaddress.IPv6Address(m.get_attr("IFA_ADDRESS"))
                for m in ipr.get_addr(family=socket.AF_INET6, index=index)
                if not m.get_attr("IFA_ADDRESS").startswith("fe80")]


def routes6(node: Any) -> dict[str, str | None]:
    """prefix -> gateway of the IPv6 main table (non-local)."""
    with node.iproute() as ipr:
        return {f"{m.get_attr('RTA_DST') or '::'}/{m['dst_len']}": m.get_attr("RTA_GATEWAY")
                for m in ipr.get_routes(family=socket.AF_INET6, table=254)
                if m["type"] == 1}


def has_link(node: Any, ifname: str) -> bool:
    with node.iproute() as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def sysctl(node: Any, path: str, value: str) -> None:
    def write() -> None:
        with open(f"/proc/sys/net/{path}", "w") as fh:
            fh.write(value)
    netns.call_in(node.netns, write)


async def wait_for(check: Any, seconds: float, what: str) -> Any:
    """Poll `check` (in a thread) until it is true, within `seconds` (a cancel scope: a slow
    check cannot overrun it)."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                result = await asyncio.to_thread(check)
                if result:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.contextmanager
def lab_up() -> Iterator[Topology]:
    topo = Topology(spec())
    try:
        topo.up()
        yield topo
    finally:
        topo.down()


def tcp_echo(ns: str, source: ipaddress.IPv6Address, target: ipaddress.IPv6Address,
             payload: bytes) -> bytes:
    with netns.socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.bind((str(source), 0))
        s.connect((str(target), TCP_PORT))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while data := s.recv(4096):
            out += data
        return out


def udp_echo(ns: str, source: ipaddress.IPv6Address, target: ipaddress.IPv6Address,
             payload: bytes) -> bytes:
    with netns.socket_in(ns, socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.bind((str(source), 0))
        for _ in range(3):
            s.sendto(payload, (str(target), UDP_PORT))
            with contextlib.suppress(TimeoutError, socket.timeout):
                return s.recv(4096)
        return b""


def test_connect_devices_reached_from_another_acp_node(tmp_path: Path) -> None:
    with lab_up() as topo:
        a, b, h, d6, d4 = (topo[n] for n in ("a", "b", "h", "d6", "d4"))
        a.add_address("lo", str(ADDR_A), 128)
        b.add_address("lo", str(ADDR_B), 128)
        # an RFC 4191 type C host: takes RIOs up to /64 (Linux defaults to 0: ::/0 only)
        sysctl(d6, "ipv6/conf/eth0/accept_ra_rt_info_max_plen", "64")
        with d4.iproute() as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="eth0")[0], address="192.168.77.2",
                     prefixlen=24)
        captures = [Capture(d6.netns, "eth0"), Capture(d4.netns, "eth0")]
        echo = EchoServers(d4.netns)
        connects = [
            ConnectConfig("nms", "conn6", subnet_id=1),
            ConnectConfig("bmc", "conn4", subnet_id=2,
                          ipv4=ipaddress.IPv4Interface("192.168.77.1/24"),
                          device_ipv4=ipaddress.IPv4Address("192.168.77.2"),
                          forward=(Forward("tcp", TCP_PORT), Forward("udp", UDP_PORT)),
                          relay_max_connections=2),
        ]
        try:
            asyncio.run(scenario(topo, tmp_path, connects, captures, echo))
        finally:
            echo.close()
            for c in captures:
                c.close()
        # nothing of DULL, GRASP, IKE or RPL on either connect link; the RAs were seen
        six, four = captures[0].seen, captures[1].seen
        assert six["icmp6:134"] >= 2, six
        forbidden = ("udp:7017", "udp:500", "udp:4500", "icmp6:155", "tcp:7017")
        assert [k for k in forbidden if six[k] or four[k]] == [], (six, four)
        # cleanup: the devices are back in the host namespace, a holds nothing of ours
        assert has_link(h, "conn6") and has_link(h, "conn4")
        assert not has_link(a, "conn6") and not has_link(a, "conn4")
        assert netns.call_in(a.netns, interface.rules_of, "conn6") == []
        assert all(ip not in NET4 for ip in global_addresses(a, "lo"))


async def scenario(topo: Topology, tmp: Path, connects: list[ConnectConfig],
                   captures: list[Capture], echo: EchoServers) -> None:
    a, b, d6 = topo["a"], topo["b"], topo["d6"]
    ctx_a = context(a.netns, ADDR_A, tmp / "a", root=False)
    ctx_b = context(b.netns, ADDR_B, tmp / "b", root=True)
    rpl_a = RplPart(ctx_a, dodag=FAST, acp_connect=True)
    rpl_b = RplPart(ctx_b, dodag=FAST)
    conn = ConnectPart(ctx_a, connects, host_namespace=topo["h"].netns, ra_min_delay=0.2)
    started: list[Any] = []
    try:
        for service in (rpl_b, rpl_a, conn):
            await service.start()
            started.append(service)
        for ctx in (ctx_a, ctx_b):
            ctx.bus.publish(events.ChannelUp("", "eth0", "eth0", ""))
        assert rpl_a.node is not None and rpl_a.node.config.preference == rplc.PRF_ACP_CONNECT
        status = conn.status()
        assert [c["state"] for c in status["connects"]] == ["up", "up"], status
        assert status["connects"][0]["subnet"] == str(NET6)

        # RPL: b learns both connect subnets from a's DAO, as targets of its child a
        def b_knows() -> bool:
            routes = routes6(b)
            return str(NET6) in routes and str(NET4) in routes
        await wait_for(b_knows, 10, "b's routes to the connect subnets")
        children = rpl_b.status()["children"]
        assert {str(NET6), str(NET4)} <= set(children[0]["targets"])

        # SLAAC from the RA; RIO gives the ACP /48 via a, and ::/0 lifetime 0: no default route
        device = await wait_for(lambda: [ip for ip in global_addresses(d6, "eth0")
                                         if ip in NET6], 10, "SLAAC address on d6")
        d6_routes = await asyncio.to_thread(routes6, d6)
        assert str(ipaddress.IPv6Network((ADDR_A, 48), strict=False)) in d6_routes, d6_routes
        assert "::/0" not in d6_routes, d6_routes

        # b pings the device, and the device pings b from its SLAAC address
        with EchoProber(b.netns, ADDR_B) as from_b, EchoProber(d6.netns, device[0]) as from_d:
            assert await wait_for(lambda: from_b.sweep([device[0]], 0.5), 10, "b -> device")
            assert await asyncio.to_thread(from_d.sweep, [ADDR_B], 1.0) == {ADDR_B}
        # RPF: a source outside the connect subnet is not forwarded into the ACP (b's side of
        # the channel sees the device's own echoes, never the spoofed ones)
        spoof = ipaddress.IPv6Address("fd00:dead::1")
        await asyncio.to_thread(d6.add_address, "lo", str(spoof), 128)
        at_b = Capture(b.netns, "eth0")
        try:
            with EchoProber(d6.netns, spoof) as spoofed, \
                    EchoProber(d6.netns, device[0]) as from_d:
                assert await asyncio.to_thread(spoofed.sweep, [ADDR_B], 0.5) == set()
                assert await asyncio.to_thread(from_d.sweep, [ADDR_B], 1.0) == {ADDR_B}
        finally:
            at_b.close()
        assert at_b.seen[f"icmp6:128:{device[0]}"] >= 1, at_b.seen
        assert at_b.seen[f"icmp6:128:{spoof}"] == 0, at_b.seen

        # RS answered: link flap on the device makes it solicit; an RA follows within ~1 s
        before = conn.status()["connects"][0]["ra"]["rs_received"]
        await asyncio.to_thread(d6.set_link, "eth0", False)
        await asyncio.to_thread(d6.set_link, "eth0", True)
        await wait_for(lambda: conn.status()["connects"][0]["ra"]["rs_received"] > before, 10,
                       "RS answered")

        # IPv4 relays from b: [relay]:port reaches the IPv4 device's echo services
        relay = ipaddress.IPv6Address(conn.status()["connects"][1]["relay"])
        assert relay in NET4
        payload = b"hello bmc" * 100
        assert await asyncio.to_thread(tcp_echo, b.netns, ADDR_B, relay, payload) == payload
        assert echo.peers and echo.peers[0][0] == "192.168.77.1"
        assert await asyncio.to_thread(udp_echo, b.netns, ADDR_B, relay, b"ipmi") == b"ipmi"
        # the relays' listening sockets live in a's ACP namespace
        acp_ino = (await asyncio.to_thread(lambda: Path(netns.netns_path(a.netns)).stat())).st_ino
        for r in conn.entries[1].relays:
            assert r.socket is not None and socket_netns_inode(r.socket) == acp_ino
        # bounded: with 2 idle TCP connections held open, a third is closed at once
        held = [await asyncio.to_thread(open_idle, b.netns, relay) for _ in range(2)]
        try:
            await wait_for(lambda: conn.entries[1].relays[0].active == 2, 5, "2 active")
            third = await asyncio.to_thread(open_idle, b.netns, relay)
            with third:
                assert await asyncio.to_thread(third.recv, 10) == b""  # refused: closed
            assert conn.entries[1].relays[0].counters["refused"] == 1
        finally:
            for s in held:
                s.close()

        reply = await ctx_a.control.dispatch(b'{"cmd": "connect"}')
        assert reply["ok"] and len(reply["result"]["connects"]) == 2
    finally:
        for service in reversed(started):
            await service.stop()
            if service is conn and rpl_a in started:
                # the No-Path DAO withdraws the subnets at b while the channel is still up
                await wait_for(lambda: str(NET6) not in routes6(b), 5, "No-Path at b")
    # the final RA (router lifetime 0, RIO lifetimes 0) took the device's ACP route away
    d6_routes = await asyncio.to_thread(routes6, d6)
    assert str(ipaddress.IPv6Network((ADDR_A, 48), strict=False)) not in d6_routes


def open_idle(ns: str, relay: ipaddress.IPv6Address) -> socket.socket:
    s = netns.socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(3)
    s.bind((str(ADDR_B), 0))
    s.connect((str(relay), TCP_PORT))
    return s


def socket_netns_inode(sock: socket.socket) -> int:
    """The inode of the network namespace a socket belongs to (SIOCGSKNS)."""
    import fcntl
    import os
    fd = fcntl.ioctl(sock.fileno(), 0x894C)  # SIOCGSKNS: returns a netns fd
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def test_late_device_and_restart_adoption(tmp_path: Path) -> None:
    """A device that appears later is picked up; keep_on_stop leaves it for the next acpd,
    which adopts it by its alias; a normal stop then returns it to the host, alias cleared."""
    topo = Topology(SpecBuilder().node("a").node("h").node("d6").build(dad=False))
    try:
        topo.up()
        a, h = topo["a"], topo["h"]
        a.add_address("lo", str(ADDR_A), 128)

        async def main() -> None:
            ctx = context(a.netns, ADDR_A, tmp_path, root=False)
            connects = [ConnectConfig("nms", "conn6", subnet_id=1)]
            first = ConnectPart(ctx, connects, host_namespace=h.netns, retry_interval=0.2)
            await first.start()
            assert first.status()["connects"][0]["state"] == "missing"
            await asyncio.to_thread(topo.add_link, "h", "d6", "conn6", "eth0")
            await wait_for(lambda: first.status()["connects"][0]["state"] == "up", 5, "late up")
            first.keep_on_stop = True
            await first.stop()
            assert await asyncio.to_thread(has_link, a, "conn6")        # left in place
            ctx2 = context(a.netns, ADDR_A, tmp_path, root=False)
            second = ConnectPart(ctx2, connects, host_namespace=h.netns)
            await second.start()
            try:
                assert second.status()["connects"][0]["state"] == "up"
                assert [ip for ip in await asyncio.to_thread(global_addresses, a, "conn6")] \
                    == [NET6.network_address + 1]
                assert len(await asyncio.to_thread(
                    netns.call_in, a.netns, interface.rules_of, "conn6")) == 2
            finally:
                await second.stop()

        asyncio.run(main())
        assert has_link(h, "conn6") and not has_link(a, "conn6")
        with h.iproute() as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname="conn6")[0])[0]
            assert not link.get_attr("IFLA_IFALIAS")
            assert link["flags"] & 1                                     # up again, as before
    finally:
        topo.down()

"""RPL over plain veth links between namespaces: one RplPart per node, one event loop.

The veths stand in for the secure channels (the engine does not care what carries a link): each
node's namespace plays its ACP namespace, with the ACP address /128 on loopback, and a ChannelUp
per veth on the node's own bus. Reachability is real: ICMPv6 echoes between ACP addresses,
forwarded hop by hop by the kernels along the routes RPL installed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import os
import socket
import time
from pathlib import Path

from pyroute2 import IPRoute

from acp_openwrt import events
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.identity.address import vlong_address, zone_address
from acp_openwrt.lab.topology import Topology, TopologySpec, from_edges, line
from acp_openwrt.node_context import NodeContext
from acp_openwrt.rpl.installer import RTPROT_ACP_RPL
from acp_openwrt.rpl.options import DodagConfiguration
from acp_openwrt.rpl.part import RplPart
from acp_openwrt.rpl.probe import EchoProber

RSUB = "area51.research.acp.example"
# Fast but in-profile: Imin 64 ms, Imax ~4 s (the default profile has Imin 128 ms, Imax ~65 s).
FAST = DodagConfiguration(dio_interval_min=6, dio_interval_doublings=6)


def acp_address(i: int) -> ipaddress.IPv6Address:
    """Mixed addressing schemes, so /127, /120 and /112 DAO targets all appear."""
    if i % 3 == 0:
        return vlong_address(RSUB, 7, i + 1, v_bits=8).address
    if i % 3 == 1:
        return zone_address(RSUB, 7, i + 1).address
    return vlong_address(RSUB, 7, i + 1, v_bits=16).address


def _runs(pid: int, what: str) -> bool:
    """Whether process `pid` exists and its command line names `what`."""
    try:
        return what in Path(f"/proc/{pid}/cmdline").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def tagged_routes(netns: str) -> list[str]:
    """RPL's routes in a namespace, read through netlink (call off the event loop)."""
    from acp_openwrt import netns as netns_exec

    def dump() -> list[str]:
        with IPRoute() as ipr:
            return [f"{m.get_attr('RTA_DST') or '::'}/{m['dst_len']}"
                    for m in ipr.get_routes(family=socket.AF_INET6, table=254)
                    if m["proto"] == RTPROT_ACP_RPL]
    return netns_exec.call_in(netns, dump)


class RplLab:
    """A topology with an RplPart per node; the first node is the DODAG root."""

    def __init__(self, spec: TopologySpec, tmp: Path) -> None:
        self.topo = Topology(spec)
        self.tmp = tmp
        self.names = [n.name for n in spec.nodes]
        self.address = {name: acp_address(i) for i, name in enumerate(self.names)}
        self.services: dict[str, RplPart] = {}
        self.probers: dict[str, EchoProber] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.names))

    def up(self) -> None:
        self.topo.up()
        for name in self.names:
            self.topo[name].add_address("lo", str(self.address[name]), 128)
            self.probers[name] = EchoProber(self.topo[name].netns, self.address[name])

    def down(self) -> None:
        for prober in self.probers.values():
            prober.close()
        self.pool.shutdown()
        self.topo.down()

    def interfaces(self, name: str) -> list[str]:
        return sorted(lk.end_at(name).ifname for lk in self.topo.links
                      if name in (lk.a.node, lk.b.node))

    async def start(self) -> None:
        for i, name in enumerate(self.names):
            node = self.topo[name]
            config = AcpConfig(dodag_root=(i == 0), namespace_acp=node.netns,
                               run_dir=self.tmp / name, log_dir=self.tmp / name)
            ctx = NodeContext(config, events.EventBus(), ControlServer(self.tmp / f"{name}.sock"),
                              identity={"acp_address": str(self.address[name]),
                                        "prefix_length": None})
            service = RplPart(ctx, dodag=FAST)
            self.services[name] = service
            await service.start()
        for name, service in self.services.items():
            for ifname in self.interfaces(name):
                service.ctx.bus.publish(events.ChannelUp(peer="", dull_ifname=ifname,
                                                         acp_ifname=ifname, peer_node_name=""))

    async def stop(self) -> None:
        for service in self.services.values():
            await service.stop()

    async def unreachable(self, echo_wait: float = 0.5) -> list[tuple[str, str]]:
        """Pairs (from, to) whose echo went unanswered within `echo_wait` seconds."""
        loop = asyncio.get_running_loop()

        def sweep(name: str) -> list[tuple[str, str]]:
            others = [self.address[o] for o in self.names if o != name]
            answered = self.probers[name].sweep(others, echo_wait)
            return [(name, o) for o in self.names if o != name and self.address[o] not in answered]

        results = await asyncio.gather(*(loop.run_in_executor(self.pool, sweep, n)
                                         for n in self.names))
        return [pair for result in results for pair in result]

    async def converge(self, limit: float) -> float:
        start = time.monotonic()
        while True:
            missing = await self.unreachable()
            if not missing:
                return time.monotonic() - start
            if time.monotonic() - start > limit:
                raise AssertionError(f"not converged after {limit}s; unreachable: {missing[:8]}")
            await asyncio.sleep(0.05)

    def peer(self, name: str, ifname: str) -> str:
        link = next(lk for lk in self.topo.links if lk.end_at(name).ifname == ifname
                    and name in (lk.a.node, lk.b.node))
        return link.other(name).node


def run_lab(spec: TopologySpec, tmp: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    lab = RplLab(spec, tmp)
    try:
        lab.up()

        async def main() -> None:
            try:
                await lab.start()
                await scenario(lab)
            finally:
                await lab.stop()
        asyncio.run(main())
        for name in lab.names:  # shutdown removed every tagged route
            assert tagged_routes(lab.topo[name].netns) == [], name
    finally:
        lab.down()


def test_root_and_chain_of_five(tmp_path: Path) -> None:
    async def scenario(lab: RplLab) -> None:
        took = await lab.converge(10.0)
        assert took < 5.0
        root, *rest = [lab.services[n] for n in lab.names]
        assert root.status()["role"] == "root"
        for i, service in enumerate(rest, 1):
            status = service.status()
            assert status["role"] == "member"
            assert status["dodag_id"] == str(lab.address["n1"])
            assert [p["ifname"] for p in status["parents"]] == ["eth0"]  # towards n{i}
            assert status["rank"] == 256 + 768 * i
        routes = await asyncio.to_thread(tagged_routes, lab.topo["n1"].netns)
        prefixes = {str(root.rpl_config().prefix)} | {str(s.rpl_config().prefix) for s in rest}
        assert prefixes <= set(routes)          # the root: every node's prefix, its own black hole
        assert "::/0" not in routes             # and no default route
        mid = await asyncio.to_thread(tagged_routes, lab.topo["n3"].netns)
        assert "::/0" in mid
        reply = await root.ctx.control.dispatch(b'{"cmd": "rpl"}')
        assert reply["ok"] and {"role", "rank", "dodag_id", "parents", "children",
                                "routes"} <= set(reply["result"])
        assert len(reply["result"]["children"]) == 1

    run_lab(line(6), tmp_path, scenario)


def mesh10() -> TopologySpec:
    names = [f"n{i}" for i in range(1, 11)]
    ring = [(names[i], names[(i + 1) % 10]) for i in range(10)]
    chords = [(0, 5), (2, 7), (3, 8), (1, 4), (6, 9)]
    return from_edges(ring + [(names[a], names[b]) for a, b in chords], names)


def test_mesh_of_ten_heals_after_link_cuts(tmp_path: Path) -> None:
    async def scenario(lab: RplLab) -> None:
        took = await lab.converge(10.0)
        assert took < 5.0
        for name in lab.names[1:]:
            status = lab.services[name].status()
            assert status["role"] == "member" and status["parents"]
        # Cut the preferred-parent link of the deepest node: set one veth end down.
        victim = max(lab.names[1:], key=lambda n: lab.services[n].status()["rank"])
        ifname = lab.services[victim].status()["parents"][0]["ifname"]
        await asyncio.to_thread(lab.topo[victim].set_link, ifname, False)
        assert await lab.converge(5.0) < 3.0
        assert ifname not in lab.services[victim].status()["interfaces"]
        assert all(p["ifname"] != ifname for p in lab.services[victim].status()["parents"])
        # A channel that goes away (ChannelDown on both ends) on another node.
        other = next(n for n in lab.names[1:] if n != victim
                     and n != lab.peer(victim, ifname))
        gone = lab.services[other].status()["parents"][0]["ifname"]
        peer = lab.peer(other, gone)
        peer_if = next(lk.end_at(peer).ifname for lk in lab.topo.links
                       if {lk.a.node, lk.b.node} == {other, peer})
        lab.services[other].ctx.bus.publish(events.ChannelDown(peer="", acp_ifname=gone))
        lab.services[peer].ctx.bus.publish(events.ChannelDown(peer="", acp_ifname=peer_if))
        assert await lab.converge(5.0) < 3.0
        # The first link comes back: RPL uses it again.
        await asyncio.to_thread(lab.topo[victim].set_link, ifname, True)
        deadline = time.monotonic() + 5
        while ifname not in lab.services[victim].status()["interfaces"]:
            assert time.monotonic() < deadline, "link came back but RPL did not take it up"
            await asyncio.sleep(0.05)
        assert await lab.converge(5.0) < 3.0

    run_lab(mesh10(), tmp_path, scenario)


def test_restart_adopts_own_routes_and_leaves_others(tmp_path: Path) -> None:
    lab = RplLab(line(2), tmp_path)
    try:
        lab.up()
        netns = lab.topo["n1"].netns
        with lab.topo["n1"].iproute() as ipr:
            ipr.route("add", dst="fd99::", dst_len=64, family=socket.AF_INET6, type=7,
                      proto=RTPROT_ACP_RPL)           # left behind by a killed acpd
            ipr.route("add", dst="fd98::", dst_len=64, family=socket.AF_INET6, type=7,
                      proto=4)                        # the operator's static route

        async def main() -> None:
            await lab.start()
            try:
                await lab.converge(5.0)
                routes = await asyncio.to_thread(tagged_routes, netns)
                assert "fd99::/64" not in routes and routes
            finally:
                await lab.stop()
        asyncio.run(main())
        assert tagged_routes(netns) == []
        with lab.topo["n1"].iproute() as ipr:
            static = [m for m in ipr.get_routes(family=socket.AF_INET6, table=254)
                      if m.get_attr("RTA_DST") == "fd98::"]
        assert static and static[0]["proto"] == 4
    finally:
        lab.down()


def test_malformed_packets_are_counted_not_fatal(tmp_path: Path) -> None:
    async def scenario(lab: RplLab) -> None:
        await lab.converge(5.0)
        sender = lab.topo["n2"].socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            scope = await asyncio.to_thread(lab.topo["n2"].index, "eth0")
            for junk in (b"\x9b\x01\x00\x00\xff", b"\x9b\x02\x00\x00", b"\x9b\x7f\x00\x00abc"):
                sender.sendto(junk, ("ff02::1a", 0, 0, scope))
            sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sender.sendto(b"\x9b\x00\x00\x00\x00\x00", ("ff02::1a", 0, 0, scope))
            sender.sendto(b"\x9b\x00\x00\x00\x00\x00", ("ff02::1", 0, 0, scope))
        finally:
            sender.close()
        await asyncio.sleep(0.3)
        counters = lab.services["n1"].status()["counters"]
        assert counters["decode_errors"] >= 3
        # A DIS with hop limit 1 (as unstrung sends) is taken; one to ff02::1 is not RPL's.
        assert counters["transport_received_hop_limit_not_255"] == 1
        assert counters["transport_drop_not_link_local_destination"] == 1
        assert "transport_drop_hop_limit" not in counters
        assert not await lab.unreachable()

    run_lab(line(2), tmp_path, scenario)


def test_external_sunshine_is_launched_in_the_namespace(tmp_path: Path) -> None:
    """A stand-in `sunshine` (records its argv and namespace, then sleeps) shows the launch:
    inside the ACP namespace, the node's role and prefix, restarted when channels change."""
    fake = tmp_path / "sunshine"
    record = tmp_path / "argv"
    fake.write_text(f"#!/bin/sh\necho \"$(readlink /proc/self/ns/net) $*\" >> {record}\n"
                    "exec sleep 30\n")
    fake.chmod(0o755)
    lab = RplLab(line(2), tmp_path)
    try:
        lab.up()
        netns = lab.topo["n1"].netns
        inode = os.stat(f"/run/netns/{netns}").st_ino

        async def main() -> None:
            ctx = NodeContext(AcpConfig(dodag_root=True, namespace_acp=netns, log_dir=tmp_path),
                              events.EventBus(), ControlServer(tmp_path / "x.sock"),
                              identity={"acp_address": str(lab.address["n1"]),
                                        "prefix_length": None})
            service = RplPart(ctx, external=True, sunshine=str(fake))
            await service.start()
            try:
                ctx.bus.publish(events.ChannelUp("", "eth0", "eth0", ""))
                deadline = time.monotonic() + 5
                while not record.exists() or service.status()["pid"] is None:
                    assert time.monotonic() < deadline, "sunshine was not started"
                    await asyncio.sleep(0.05)
                status = service.status()
                assert status["implementation"] == "unstrung" and status["interfaces"] == ["eth0"]
                line_ = record.read_text().splitlines()[0]
                assert line_.startswith(f"net:[{inode}] ")
                range48 = ipaddress.IPv6Network(f"{lab.address['n1']}/48", strict=False)
                assert line_.endswith(f" -v -i eth0 -I 0 -p {range48} -G {lab.address['n1']} -R 1")
                pid = status["pid"]
                ctx.bus.publish(events.ChannelDown("", "eth0"))
                await asyncio.sleep(1.0)  # restart delay: with no interface left, it stops
                assert service.status()["pid"] is None
                assert not await asyncio.to_thread(_runs, pid, "sleep")
            finally:
                await service.stop()
        asyncio.run(main())
        assert (tmp_path / "sunshine.log").exists()
    finally:
        lab.down()

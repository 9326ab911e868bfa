"""The ACP map over real GRASP and real acpd.

1. Three namespaces a–b–c joined by veths standing in for secure channels (as in
   test_grasp_acp.py: ACP addresses on lo, /128 routes, b forwards), a real ACP GraspService
   in each and the real `MapPart` on each, told of its "channels" by ChannelUp events: the map
   asked at a reaches c two hops away by GRASP synchronization over TCP, with every node,
   channel and RPL parent; c stopped: it is drawn as not reached.
2. Real acpd (AcpdLab): a registrar and an enrolled node. This host has no kernel IPsec, so no
   channels come up: the map from each node is the node itself, reached, with its roles.
"""
from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from acp_openwrt.acpmap.core import Limits
from acp_openwrt.acpmap.part import MapPart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import api
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import ChannelUp, EventBus
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.node_context import NodeContext, Ports

from .test_grasp_acp import ADDRESS, NAMES, build

DOMAIN = "acp.example.com"


def node_name(address: str) -> str:
    return f"{int(ipaddress.IPv6Address(address)):032x}+@{DOMAIN}"


class GraspPort:
    def __init__(self, svc: GraspService) -> None:
        self.svc = svc

    def asa_api(self) -> GraspService:
        return self.svc

    async def find_est_server(self) -> tuple[str, int] | None:
        return None


class RplStub:
    """The `rpl` answer: a root, or a member whose preferred parent is on `ifname`."""

    def __init__(self, root: bool, ifname: str | None) -> None:
        self.root, self.ifname = root, ifname

    def status(self) -> dict[str, Any]:
        if self.root:
            return {"running": True, "role": "root", "rank": 256, "parents": [], "routes": []}
        return {"running": True, "role": "member", "rank": 512, "routes": [],
                "parents": [{"address": "fe80::1", "ifname": self.ifname, "preferred": True,
                             "rank": 256}]}


def test_the_map_reaches_two_hops_by_grasp_synchronization(topology, tmp_path: Path) -> None:
    topo = build(topology)
    peers = {"a": ["b"], "b": ["a", "c"], "c": ["b"]}
    parent = {"a": None, "b": "a", "c": "b"}

    async def scenario() -> None:
        svcs: dict[str, GraspService] = {}
        parts: dict[str, MapPart] = {}
        try:
            for name in NAMES:
                svc = GraspService(namespace=topo[name].netns, mode="acp",
                                   address=ADDRESS[name])
                await svc.start()
                svcs[name] = svc
                for peer in peers[name]:
                    await svc.add_interface(topo[name].ifname(peer))
                ctx = NodeContext(
                    config=AcpConfig(registrar=name == "a", dodag_root=name == "a"),
                    bus=EventBus(), control=ControlServer(tmp_path / f"{name}.sock"),
                    identity={"acp_address": ADDRESS[name],
                              "acp_node_name": node_name(ADDRESS[name])})
                up = parent[name]
                ctx.ports = Ports(acp_grasp=GraspPort(svc),
                                  rpl=RplStub(up is None,
                                              topo[name].ifname(up) if up else None))
                part = MapPart(ctx, Limits(ask_timeout=1.0, deadline=4.0))
                await part.start()
                for peer in peers[name]:
                    ctx.bus.publish(ChannelUp(peer="fe80::9", dull_ifname="x",
                                              acp_ifname=topo[name].ifname(peer),
                                              peer_node_name=node_name(ADDRESS[peer])))
                parts[name] = part
            answer = await parts["a"]._control({})
            assert api.problems(answer, api.MapAnswer) == []
            nodes = {n["address"]: n for n in answer["nodes"]}
            assert set(nodes) == set(ADDRESS.values()), answer
            assert all(n["reached"] for n in nodes.values()), answer
            assert answer["complete"] is True
            assert nodes[ADDRESS["a"]]["roles"] == ["registrar", "root"]
            assert nodes[ADDRESS["c"]]["hops"] == 2
            assert nodes[ADDRESS["c"]]["name"] == node_name(ADDRESS["c"])
            assert {(ch["a"], ch["b"], ch["confirmed"]) for ch in answer["channels"]} == {
                (ADDRESS["a"], ADDRESS["b"], True), (ADDRESS["b"], ADDRESS["c"], True)}
            assert {(p["child"], p["parent"]) for p in answer["parents"]} == {
                (ADDRESS["b"], ADDRESS["a"]), (ADDRESS["c"], ADDRESS["b"])}
            # from the other end too
            answer_c = await parts["c"]._control({})
            assert {n["address"] for n in answer_c["nodes"] if n["reached"]} == \
                set(ADDRESS.values())
            # c goes away: after the cache time the map says so, in bounded time
            await parts["c"].stop()
            await svcs["c"].stop()
            del svcs["c"]
            await asyncio.sleep(3.1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await parts["a"]._control({})
            assert loop.time() - started < 4.5
            nodes = {n["address"]: n for n in answer["nodes"]}
            assert not nodes[ADDRESS["c"]]["reached"] and nodes[ADDRESS["c"]]["error"]
            assert answer["complete"] is False
        finally:
            for part in parts.values():
                await part.stop()
            for svc in svcs.values():
                await svc.stop()

    asyncio.run(scenario())


def test_real_acpd_answers_map_with_itself(lab: AcpdLab) -> None:
    lab.start_masa("n1")
    lab.make_registrar("n1")
    lab.enrol("n2")
    lab.start_all(["n1", "n2"])
    for name in ("n1", "n2"):
        lab.wait(f"{name}'s parts all started",
                 lambda name=name: "ubus" in lab.ask(name, "status")["parts"], timeout=30)
    for name, roles in (("n1", ["registrar"]), ("n2", [])):
        status = lab.ask(name, "status")
        assert status["acpmap"]["answering"] is True, status["acpmap"]
        answer = lab.ask(name, "map")
        assert api.problems(answer, api.MapAnswer) == []
        me = answer["nodes"][0]
        assert me["origin"] and me["reached"] and me["address"] == lab.acp_address(name)
        assert set(roles) <= set(me["roles"])
        assert me["state"] in ("root", "detached", "attached", "no-rpl")
        assert answer["origin"] == lab.acp_address(name)

"""The registrar part end to end: bootstrap, the join proxy of its own node, a real pledge.

Namespaces: `dull` and `acp` are the registrar node's (acpd's DULL and ACP namespaces);
`pledge` hangs off `dull` by a veth; `peer` hangs off `acp` by a veth that stands in for a
secure channel and runs its own ACP GRASP, which must hear the AN_join_registrar flood. The
bench MASA listens on ::1 of the test's own namespace, where acpd's data plane is, and the
registrar reaches it from there (its default). The pledge enrols the real way: TCP to the
join proxy's link-local port on `dull`, relayed by the unprivileged proxy process to the
registrar's ACP address, which the proxy learned only from RegistrarPart.
"""
from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

from acp_openwrt.brski.pledge.client import (
    IdentityPaths,
    Locator,
    PledgeClient,
    load_pledge_identity,
)
from acp_openwrt.brski.pledge.core import Enrolled, Refused
from acp_openwrt.brski.proxy.part import JoinProxyPart, ProxySettings
from acp_openwrt.brski.proxy.registrars import registrar_from_flood
from acp_openwrt.brski.registrar.bootstrap import CA_CERT_NAME, bootstrap_registrar
from acp_openwrt.brski.registrar.part import RegistrarPart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import AnProxyStart, AnProxyStop, EventBus, LinkAdopted
from acp_openwrt.grasp.actions import FloodReceived
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.identity.certificate import find_acp_node_name, load_certificate, load_certificates
from acp_openwrt.identity.membership import check_domain_membership
from acp_openwrt.identity.summary import load_identity_summary
from acp_openwrt.lab.masa import Masa
from acp_openwrt.lab.topology import from_edges
from acp_openwrt.lab.waiting import until
from acp_openwrt.node_context import NodeContext, Ports

DOMAIN = "acp.example.com"
PEER_ADDRESS = "fd00:99::1"


class AcpGrasp:
    """The acp_grasp port over a bare GraspService (what AcpGraspPart provides in acpd)."""

    def __init__(self, grasp: GraspService) -> None:
        self.grasp = grasp

    def asa_api(self) -> GraspService:
        return self.grasp

    async def find_est_server(self) -> tuple[str, int] | None:
        return None


def test_pledge_enrols_through_the_local_join_proxy_and_the_flood_is_heard(topology,
                                                                           tmp_path: Path) -> None:
    topo = topology(from_edges([("dull", "pledge"), ("acp", "peer")],
                               nodes=["dull", "pledge", "acp", "peer"]))
    masa = Masa.create(tmp_path / "vendor", host="::1")
    node = tmp_path / "node"
    config = AcpConfig(registrar=True, registrar_domain=DOMAIN,
                       registrar_dir=tmp_path / "registrar", ldevid_cert=node / "ldevid.crt",
                       ldevid_key=node / "ldevid.key", trust_anchors=node / "ta.pem",
                       manufacturer_trust_anchor=masa.anchor_path,
                       namespace_dull=topo["dull"].netns, namespace_acp=topo["acp"].netns,
                       run_dir=tmp_path / "run", log_dir=tmp_path / "run")
    started = time.perf_counter()
    assert bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key,
                               config.trust_anchors) is True
    bootstrap_s = time.perf_counter() - started
    identity = load_identity_summary(config.ldevid_cert)
    registrar_address = identity["acp_address"]
    # What the channels part does on a real node: the ACP address on the ACP loopback.
    topo["acp"].add_address("lo", registrar_address, 128)
    topo["peer"].add_address("lo", PEER_ADDRESS, 128)
    dull_if, pledge_if = topo["dull"].ifname("pledge"), topo["pledge"].ifname("dull")
    acp_if, peer_if = topo["acp"].ifname("peer"), topo["peer"].ifname("acp")
    link = LinkAdopted("host0", dull_if, topo["dull"].index(dull_if),
                       topo["dull"].link_local(dull_if))
    topo["pledge"].link_local(pledge_if)
    topo["acp"].link_local(acp_if)
    topo["peer"].link_local(peer_if)

    bus = EventBus()
    ctx = NodeContext(config, bus, ControlServer(tmp_path / "run" / "acpd.sock"),
                      identity=identity)
    proxy_events: list[object] = []
    bus.subscribe(AnProxyStart, proxy_events.append)
    bus.subscribe(AnProxyStop, proxy_events.append)
    proxy = JoinProxyPart(ctx, ProxySettings())  # hears RegistrarHeard on the bus
    registrar = RegistrarPart(ctx)
    pledge_dir = tmp_path / "pledge"

    def pledge(idevid: Any, where: Path) -> PledgeClient:
        return PledgeClient(load_pledge_identity(idevid.cert_path, idevid.key_path,
                                                 masa.anchor_path),
                            IdentityPaths(idevid.cert_path, idevid.key_path, where / "ldevid.crt",
                                          where / "ldevid.key", where / "ta.pem"),
                            namespace=topo["pledge"].netns)

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        await masa.serve(port=0)  # IDevIDs name the MASA's port: issued after it listens
        device = masa.issue_idevid("SN-REG-1")
        stranger = masa.issue_idevid("SN-UNKNOWN", register=False)
        masa.trust_registrar(load_certificate(config.registrar_dir / CA_CERT_NAME))
        grasp = GraspService(namespace=topo["acp"].netns, mode="acp", address=registrar_address)
        peer = GraspService(namespace=topo["peer"].netns, mode="acp", address=PEER_ADDRESS)
        heard: list[FloodReceived] = []
        try:
            await grasp.start()
            await peer.start()
            await grasp.add_interface(acp_if)
            await peer.add_interface(peer_if)
            peer.on_flood("AN_join_registrar", heard.append)
            ctx.ports = Ports(acp_grasp=AcpGrasp(grasp))
            await proxy.start()
            t0 = time.perf_counter()
            await registrar.start()
            out["start_s"] = time.perf_counter() - t0
            bus.publish(link)
            start = await until(lambda: [e for e in proxy_events if isinstance(e, AnProxyStart)],
                                what="AN_Proxy (the proxy must know the local registrar)")
            out["an_proxy_s"] = time.perf_counter() - t0
            await until(lambda: heard, what="AN_join_registrar flood at the peer")
            out["flood"] = heard[0]
            locator = Locator(start[0].address, start[0].port, pledge_if)
            t1 = time.perf_counter()
            out["result"] = await pledge(device, pledge_dir).attempt(locator)
            out["enrol_s"] = time.perf_counter() - t1
            out["refused"] = await pledge(stranger, tmp_path / "stranger").attempt(locator)
            await until(lambda: registrar.status()["counters"].get("enrollstatus 200"),
                        what="enrollstatus")
            out["reply"] = await ctx.control.dispatch(b'{"cmd": "registrar"}')
            out["port_open"] = _listening(topo["acp"], registrar_address, config.registrar_port)
            await registrar.stop()
            await until(lambda: any(isinstance(e, AnProxyStop) for e in proxy_events),
                        what="AN_Proxy withdrawn after the registrar stopped")
            out["port_closed"] = not _listening(topo["acp"], registrar_address,
                                                config.registrar_port)
            out["status_after"] = registrar.status()
        finally:
            await registrar.stop()
            await proxy.stop()
            await peer.stop()
            await grasp.stop()
            await masa.close()
        return out

    out = asyncio.run(main())
    result = out["result"]
    assert isinstance(result, Enrolled), result
    cert = load_certificate(pledge_dir / "ldevid.crt")
    anchors = load_certificates(config.trust_anchors)  # what bootstrap_registrar wrote
    membership = check_domain_membership(cert, [], anchors, DOMAIN)
    assert membership.ok, membership
    pledge_name = find_acp_node_name(cert).text
    assert pledge_name != identity["acp_node_name"]
    assert load_identity_summary(pledge_dir / "ldevid.crt")["acp_address"] != registrar_address
    assert [a["serial"] for a in masa.audit_log] == ["SN-REG-1"]

    refused = out["refused"]
    assert isinstance(refused, Refused) and "unknown device" in refused.reason

    flood = out["flood"]
    assert tuple(flood.objective) == ("AN_join_registrar", 4, 255, "EST-TLS")
    found = registrar_from_flood(flood.objective.name, flood.objective.value, flood.locator)
    assert found is not None and found.port == config.registrar_port
    assert found.address == registrar_address

    reply = out["reply"]
    assert reply["ok"], reply
    status = reply["result"]
    assert status["running"] and status["port"] == config.registrar_port == 8443
    assert status["domain"] == DOMAIN and status["enrolled"] == 1
    assert status["flooding"] and status["floods_sent"] >= 1
    assert status["counters"]["simpleenroll 200"] == 1
    assert any("SN-UNKNOWN" in r["who"] and r["status"] == 404 for r in status["recent_refusals"])
    assert out["port_open"] and out["port_closed"]
    assert out["status_after"]["running"] is False
    print(f"\nbootstrap {bootstrap_s * 1000:.0f} ms,"
          f" registrar start {out['start_s'] * 1000:.0f} ms,"
          f" start to AN_Proxy {out['an_proxy_s'] * 1000:.0f} ms,"
          f" enrolment via proxy {out['enrol_s'] * 1000:.0f} ms")


def _listening(node: Any, address: str, port: int) -> bool:
    sock = node.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()



def test_port_in_use_is_reported_and_the_node_keeps_running(topology, tmp_path: Path) -> None:
    topo = topology(from_edges([], nodes=["acp"]))
    config = AcpConfig(registrar=True, registrar_domain=DOMAIN,
                       registrar_dir=tmp_path / "registrar", ldevid_cert=tmp_path / "l.crt",
                       ldevid_key=tmp_path / "l.key", trust_anchors=tmp_path / "ta.pem",
                       namespace_acp=topo["acp"].netns, run_dir=tmp_path, log_dir=tmp_path)
    bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)
    ctx = NodeContext(config, EventBus(), ControlServer(tmp_path / "acpd.sock"),
                      identity=load_identity_summary(config.ldevid_cert))
    squatter = topo["acp"].socket(socket.AF_INET6, socket.SOCK_STREAM)
    squatter.bind(("::", config.registrar_port))
    squatter.listen(1)
    service = RegistrarPart(ctx)

    async def main() -> dict[str, Any]:
        await service.start()
        reply = await ctx.control.dispatch(b'{"cmd": "registrar"}')
        await service.stop()
        return reply
    try:
        reply = asyncio.run(main())
    finally:
        squatter.close()
    status = reply["result"]
    assert status["running"] is False
    assert "cannot listen on [::]:8443" in status["problem"] and "in use" in status["problem"]

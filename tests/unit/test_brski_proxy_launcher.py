"""acpd's join-proxy part without namespaces: registrars heard, staying off without LDevID."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from acp_openwrt.brski.proxy import handover as ho
from acp_openwrt.brski.proxy.part import JoinProxyPart
from acp_openwrt.config.schema import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import AcpRoutesChanged, EventBus, LinkAdopted, RegistrarHeard
from acp_openwrt.grasp.actions import FloodReceived
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.part import registrar_heard
from acp_openwrt.node_context import NodeContext

ADDR = bytes.fromhex("fda379a6f6ee00000200000064000001")


def service(tmp_path: Path) -> JoinProxyPart:
    ctx = NodeContext(AcpConfig(run_dir=tmp_path), EventBus(), ControlServer(tmp_path / "s"))
    return JoinProxyPart(ctx)


def flood(name: str, value: object, locator: Locator | None, expires: float) -> FloodReceived:
    return FloodReceived("acp_x", ADDR, Objective(name, 4, 255, value), locator, expires)


def test_registrar_floods_feed_the_table(tmp_path: Path) -> None:
    """The ACP GRASP part turns AN_join_registrar floods into RegistrarHeard; the join proxy
    part hears those on the bus."""
    svc = service(tmp_path)
    now = time.monotonic()
    floods = [flood("AN_join_registrar", "EST-TLS", Locator(103, ADDR, 6, 8443), now + 180),
              flood("AN_ACP", "IKEv2", Locator(103, ADDR, 17, 500), now + 60),
              flood("AN_join_registrar", "EST-TLS", None, now + 60),
              flood("AN_join_registrar", "EST-TLS", Locator(103, ADDR, 6, 8443), now - 1),
              flood("AN_join_registrar", "EST-TLS",
                    Locator(103, bytes.fromhex("fd00" + "00" * 13 + "05"), 6, 443),
                    float("inf"))]
    for heard_event in (registrar_heard(f, now) for f in floods):
        if heard_event is not None:
            svc.ctx.bus.publish(heard_event)
    heard = svc.status()["registrars_heard"]
    assert [(r["address"], r["port"]) for r in heard] == [
        ("fd00::5", 443), ("fda3:79a6:f6ee:0:200:0:6400:1", 8443)]
    assert 170 < heard[1]["expires_in"] <= 180
    assert heard[0]["expires_in"] > 86400  # GRASP ttl 0: kept for as long as we can say
    svc.ctx.bus.publish(RegistrarHeard("fd00::5", 443, 0))  # withdrawn
    assert len(svc.status()["registrars_heard"]) == 1


def test_without_ldevid_the_service_stays_off(tmp_path: Path) -> None:
    svc = service(tmp_path)

    async def scenario() -> None:
        await svc.start()
        svc.ctx.bus.publish(LinkAdopted("eth0", "eth0", 2, "fe80::1"))
        await asyncio.sleep(0.05)
        reply = await svc.ctx.control.dispatch(b'{"cmd":"proxy"}')
        assert reply["ok"] and reply["result"]["active"] is False
        assert reply["result"]["proxy"] is None and reply["result"]["listeners"] == []
        await svc.stop()
    asyncio.run(scenario())
    assert svc.announcements() == []


def test_new_routes_make_the_proxy_probe_again_until_a_registrar_answers(tmp_path: Path) -> None:
    """RPL's AcpRoutesChanged (routes installed, a DAO acknowledged) becomes a Reprobe for the
    proxy process while it knows no registrar that answers; once one answered, nothing."""
    svc = service(tmp_path)
    posted: list = []
    svc._post = lambda msg, fds=(): posted.append(msg)  # type: ignore[method-assign]
    svc.ctx.bus.publish(AcpRoutesChanged(installed=False))
    assert posted == [ho.Reprobe()]
    svc._state = ho.RegistrarState(True, "fd00::5", 443)
    svc.ctx.bus.publish(AcpRoutesChanged(installed=True))
    assert posted == [ho.Reprobe()]

"""`enroll` (acpctl brski enroll, ubus call acp enroll): retry proxies now, or renew now."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from acp_openwrt.brski.pledge.client import Locator
from acp_openwrt.brski.pledge.part import PledgePart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer
from acp_openwrt.events import EstServerHeard, EventBus
from acp_openwrt.node_context import NodeContext, Ports


def service(tmp_path: Path) -> PledgePart:
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    return PledgePart(ctx, state_dir=tmp_path)


def dispatch(svc: PledgePart) -> dict:
    return asyncio.run(svc.ctx.control.dispatch(json.dumps({"cmd": "enroll"}).encode()))


def test_pledging_node_retries_every_proxy_at_once(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.state = "pledging"
    svc.add_proxy("fe80::1", 4000, "eth0")
    now = time.monotonic()
    svc.book.failed(Locator("fe80::1", 4000, "eth0"), now, "refused")
    assert svc.book.next_due(now + 1)[0] is None  # backing off
    reply = dispatch(svc)
    assert reply == {"ok": True, "result": {"state": "pledging", "proxies_tried_now": 1}}
    assert svc.book.next_due(time.monotonic())[0] == Locator("fe80::1", 4000, "eth0")


def test_without_idevid_enroll_says_why(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.state, svc.last_refusal = "no-idevid", "cannot read idevid.pem"
    reply = dispatch(svc)
    assert reply["ok"] is False
    assert reply["error"] == "cannot enrol: BRSKI state is no-idevid (cannot read idevid.pem)"


def test_enrolled_node_renews_now(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.state = "enrolled"
    reply = dispatch(svc)  # no EST server known: the renewal fails, and says so
    assert reply["ok"] is True and reply["result"]["renewed"] is False
    assert "no EST server" in reply["result"]["error"]


def test_renewal_asks_acp_grasp_for_an_est_server_heard_before_it_started(tmp_path: Path,
                                                                         monkeypatch) -> None:
    """After the rebuild that follows enrolment the renewal part starts after ACP GRASP: the
    registrar's flood may have gone by already, so it asks the GRASP part."""
    svc = service(tmp_path)
    svc.state = "enrolled"
    targets = []

    class HeardIt:  # the acp_grasp port
        def asa_api(self) -> None:
            return None

        async def find_est_server(self) -> tuple[str, int]:
            return ("fd00::1", 8443)

    async def reenroll(target, stored, namespace=None) -> None:
        targets.append((target, namespace))

    monkeypatch.setattr("acp_openwrt.brski.pledge.part.reenroll", reenroll)
    monkeypatch.setattr(svc, "_publish", lambda: None)
    svc.ctx.ports = Ports(acp_grasp=HeardIt())
    reply = dispatch(svc)
    assert reply["result"]["renewed"] is True, reply
    assert targets == [(Locator("fd00::1", 8443), svc.ctx.acp_ns)]


def test_an_est_server_heard_is_where_renewal_goes(tmp_path: Path, monkeypatch) -> None:
    """EstServerHeard (published by the ACP GRASP part) is enough: no acp_grasp port needed."""
    svc = service(tmp_path)
    svc.state = "enrolled"
    targets = []

    async def reenroll(target, stored, namespace=None) -> None:
        targets.append((target, namespace))

    monkeypatch.setattr("acp_openwrt.brski.pledge.part.reenroll", reenroll)
    monkeypatch.setattr(svc, "_publish", lambda: None)
    svc.ctx.bus.publish(EstServerHeard("fd00::2", 443))
    assert svc.ctx.acp_grasp is None
    reply = dispatch(svc)
    assert reply["result"]["renewed"] is True, reply
    assert targets == [(Locator("fd00::2", 443), svc.ctx.acp_ns)]

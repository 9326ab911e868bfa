"""`enroll` (acpctl brski enroll, ubus call acp enroll): retry proxies now, or renew now."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from acp_openwrt.brski.pledge.client import Locator
from acp_openwrt.brski.pledge.part import PledgePart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer
from acp_openwrt.events import EstServerHeard, EventBus, ProxyHeard
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


def test_the_pledge_runs_the_proxy_book_on_one_timer(tmp_path: Path, monkeypatch) -> None:
    """ProxyHeard -> the book's timer starts an attempt; a refusal backs off, and the retry
    comes from the timer (no polling); enrolled, the part publishes and stops the timer."""
    from acp_openwrt.brski.pledge import part as pledge_part
    from acp_openwrt.brski.pledge.core import Enrolled, Refused
    tried: list[tuple[Locator, float]] = []

    class FakeClient:
        def __init__(self, *args, **kwargs) -> None:
            pass

        async def attempt(self, locator: Locator):
            tried.append((locator, asyncio.get_running_loop().time()))
            if len(tried) == 1:
                return Refused("not yet")
            return Enrolled(None, None, (), "node+@acp.example", None)  # type: ignore[arg-type]

    async def no_problem(*args) -> None:
        return None

    monkeypatch.setattr(pledge_part, "idevid_problem", no_problem)  # (a child process's check)
    monkeypatch.setattr(pledge_part, "load_pledge_identity", lambda *args: object())
    monkeypatch.setattr(pledge_part, "PledgeClient", FakeClient)
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    svc = PledgePart(ctx, state_dir=tmp_path, initial_backoff=0.2)
    published: list[str] = []
    monkeypatch.setattr(svc, "_publish", lambda: published.append(svc.state))

    async def scenario() -> None:
        await svc.start()
        await asyncio.sleep(0.05)
        assert svc.state == "pledging" and tried == []  # no proxy heard: nothing to do
        ctx.bus.publish(ProxyHeard("fe80::1", 4000, "eth0"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if published:
                break
        await svc.stop()
    asyncio.run(scenario())
    assert [loc for loc, _ in tried] == [Locator("fe80::1", 4000, "eth0")] * 2
    assert tried[1][1] - tried[0][1] >= 0.19  # the back-off, timed by the book
    assert published == ["enrolled"] and svc.attempts == 2 and svc._timer is None


def test_a_pledge_loads_the_brski_work_ahead_when_an_acp_node_is_next_to_it(
        tmp_path: Path, monkeypatch) -> None:
    """AdjacencyUp while pledging: the IDevID (and the BRSKI work's modules) load in a worker
    thread, and the first attempt through a proxy uses what was loaded; not pledging (idle,
    enrolled), nothing loads."""
    from acp_openwrt.brski.pledge import part as pledge_part
    from acp_openwrt.events import AdjacencyUp

    svc = service(tmp_path)
    loaded: list = []
    built: list = []

    def load(cert, key, anchors):
        loaded.append(threading.current_thread() is not threading.main_thread())
        return "the idevid"

    class Client:
        def __init__(self, identity, paths, **_kw) -> None:
            built.append(identity)

        async def attempt(self, _locator):
            return pledge_part.__getattr__("Refused")("test")

    monkeypatch.setattr(pledge_part, "load_pledge_identity", load, raising=False)
    monkeypatch.setattr(pledge_part, "PledgeClient", Client, raising=False)

    async def scenario() -> None:
        up = AdjacencyUp("fe80::2", "eth0", ("IKEv2",), 500)
        svc.ctx.bus.publish(up)                  # not pledging: nothing
        assert svc._loading is None
        svc.state = "pledging"
        svc.ctx.bus.publish(up)
        svc.ctx.bus.publish(up)                  # once
        assert await svc._loading == "the idevid"
        await svc._try(Locator("fe80::2", 4000, "eth0"))
        assert loaded == [True] and built == ["the idevid"]

    asyncio.run(scenario())


def refusing_pledge(monkeypatch, check, tried: list[Locator]) -> None:
    """The pledge part's IDevID check replaced by `check`, its client by one that records
    each locator it is sent to and is refused there."""
    from acp_openwrt.brski.pledge import part as pledge_part
    from acp_openwrt.brski.pledge.core import Refused

    class FakeClient:
        def __init__(self, *args, **kwargs) -> None:
            pass

        async def attempt(self, locator: Locator):
            tried.append(locator)
            return Refused("not yet")

    monkeypatch.setattr(pledge_part, "idevid_problem", check)
    monkeypatch.setattr(pledge_part, "load_pledge_identity", lambda *args: object())
    monkeypatch.setattr(pledge_part, "PledgeClient", FakeClient)


def test_the_idevid_check_runs_beside_pledging_and_the_first_attempt_ends_it(
        tmp_path: Path, monkeypatch) -> None:
    """A proxy heard while the IDevID check (a child process, seconds on a slow box) still
    runs is tried at once; loading the IDevID for that attempt gives the same verdict, so the
    check is cancelled."""
    checking: list[str] = []
    tried: list[Locator] = []

    async def slow_check(*_args) -> None:
        checking.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            checking.append("cancelled")
            raise

    refusing_pledge(monkeypatch, slow_check, tried)
    svc = service(tmp_path)

    async def scenario() -> None:
        await svc.start()
        await asyncio.sleep(0.05)
        assert svc.state == "pledging" and checking == ["started"]
        svc.ctx.bus.publish(ProxyHeard("fe80::1", 4000, "eth0"))
        for _ in range(50):
            await asyncio.sleep(0.02)
            if tried:
                break
        await asyncio.sleep(0.02)
        assert tried == [Locator("fe80::1", 4000, "eth0")]
        assert checking == ["started", "cancelled"] and svc.state == "pledging"
        await svc.stop()
    asyncio.run(scenario())


def test_an_unusable_idevid_found_by_the_check_ends_pledging(tmp_path: Path,
                                                             monkeypatch) -> None:
    from acp_openwrt.brski.pledge import part as pledge_part

    async def bad(*_args) -> str:
        return "idevid.pem: no such file"

    monkeypatch.setattr(pledge_part, "idevid_problem", bad)
    svc = service(tmp_path)

    async def scenario() -> None:
        await svc.start()
        await asyncio.wait_for(svc._task, 2.0)   # _run ends: nothing to pledge with
        assert svc.state == "no-idevid" and svc.last_refusal == "idevid.pem: no such file"
        assert svc._timer is None
        svc.ctx.bus.publish(ProxyHeard("fe80::1", 4000, "eth0"))
        await asyncio.sleep(0.05)
        assert svc.attempts == 0
        await svc.stop()
    asyncio.run(scenario())


def test_no_idevid_check_when_a_proxy_is_already_heard(tmp_path: Path, monkeypatch) -> None:
    """A proxy heard before the part starts (the solicitation's answer comes fast): the attempt
    starts at once and loads the IDevID itself, so no check child is started to be killed."""
    checks: list[str] = []

    async def check(*_args) -> None:
        checks.append("started")

    refusing_pledge(monkeypatch, check, [])
    svc = service(tmp_path)

    async def scenario() -> None:
        svc.ctx.bus.publish(ProxyHeard("fe80::1", 4000, "eth0"))
        await svc.start()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if svc.attempts:
                break
        assert svc.attempts == 1 and checks == []
        await svc.stop()
    asyncio.run(scenario())

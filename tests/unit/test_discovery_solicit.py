"""A pledge asks its links for a join proxy (M_DISCOVERY for AN_Proxy, backed off), and a
proxy answers with its AN_Proxy flood at once: the solicitation core and the discovery part's
two sides, without sockets."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import events
from acp_openwrt.config.schema import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.core import CoreTimer
from acp_openwrt.discovery.part import DiscoveryPart
from acp_openwrt.discovery.solicit import MAX_RETRY, Solicit, SolicitBackoff
from acp_openwrt.events import EventBus
from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import DiscoveryHeard
from acp_openwrt.grasp.messages import Objective
from acp_openwrt.node_context import NodeContext

pytestmark = pytest.mark.unit


def test_a_link_is_asked_at_once_then_backed_off_to_an_hour() -> None:
    core = SolicitBackoff()
    assert core.next_timer() is None
    assert core.link_up("eth0", 100.0) == [Solicit("eth0")]
    times = []
    now = 100.0
    for _ in range(16):
        now = core.next_timer()
        assert core.handle_timer(now) == [Solicit("eth0")]
        times.append(now - 100.0)
    assert times[:5] == [1.0, 3.0, 7.0, 15.0, 31.0]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) == MAX_RETRY
    assert core.handle_timer(now) == []          # early or repeated calls: nothing due
    assert core.link_up("eth0", now) == [Solicit("eth0")]   # a link change resets it
    assert core.next_timer() == now + 1.0
    core.link_down("eth0")
    assert core.next_timer() is None and core.counters["solicitations"] == 18


class FakeDull:
    """What the discovery part asks of its DULL GRASP here."""

    def __init__(self) -> None:
        self.interfaces = {"eth0": "fe80::1"}
        self.floods: list[tuple[str | None, str]] = []
        self.solicited: list[tuple[str | None, Objective]] = []

    def flood(self, _asa: Any, ttl_ms: int, items: list, ifname: str | None = None) -> int:
        self.floods.append((ifname, items[0][0].name))
        return 1

    def solicit(self, _asa: Any, objective: Objective, ifname: str | None = None) -> int:
        self.solicited.append((ifname, objective))
        return 1


@pytest.fixture
def disc(tmp_path: Path) -> DiscoveryPart:
    config = AcpConfig(run_dir=tmp_path)
    part = DiscoveryPart(NodeContext(config, EventBus(), ControlServer(config.control_socket)))
    part.grasp = FakeDull()
    return part


def test_a_proxy_answers_a_solicitation_by_flooding_at_once(disc: DiscoveryPart) -> None:
    asked = DiscoveryHeard("eth0", b"\xfe\x80" + bytes(13) + b"\x02",
                           Objective("AN_Proxy", c.F_DISC | c.F_SYNCH, 1))
    disc._proxy_solicited(asked)
    assert disc.grasp.floods == []                 # our proxy does not serve eth0 (yet)
    disc.ctx.bus.publish(events.AnProxyStart("eth0", "fe80::1", 4443))
    assert disc.grasp.floods == [("eth0", "AN_Proxy")]   # starting to serve floods at once
    disc._proxy_solicited(asked)
    assert disc.grasp.floods[-1] == ("eth0", "AN_Proxy") and len(disc.grasp.floods) == 2
    for _ in range(50):                            # a burst costs one flood a second at most
        disc._proxy_solicited(asked)
    assert len(disc.grasp.floods) == 2
    assert disc.solicitations_answered == 1


def test_an_answered_solicitation_is_published_once_a_second_per_link(
        disc: DiscoveryPart) -> None:
    heard: list[events.PledgeSolicited] = []
    disc.ctx.bus.subscribe(events.PledgeSolicited, heard.append)
    asked = DiscoveryHeard("eth0", b"\xfe\x80" + bytes(13) + b"\x02",
                           Objective("AN_Proxy", c.F_DISC | c.F_SYNCH, 1))
    disc._proxy_solicited(asked)
    assert heard == []                              # not our proxy's link: nothing is coming here
    disc.ctx.bus.publish(events.AnProxyStart("eth0", "fe80::1", 4443))
    for _ in range(20):
        disc._proxy_solicited(asked)
    assert heard == [events.PledgeSolicited("eth0")]


def test_a_pledge_solicits_when_its_link_comes_up_and_stops_once_enrolled(
        disc: DiscoveryPart) -> None:
    asyncio.run(_pledge_side(disc))


async def _pledge_side(disc: DiscoveryPart) -> None:
    disc._solicit_timer = CoreTimer(disc.solicit, disc._solicit_out, name="test")
    disc.links["eth0"] = "fe80::1"
    disc._solicit_timer.feed(disc.solicit.link_up("eth0", 0.0))
    ((ifname, objective),) = disc.grasp.solicited
    assert ifname == "eth0" and objective == Objective("AN_Proxy", c.F_DISC | c.F_SYNCH, 1)
    assert disc.solicit.next_timer() == 1.0   # the test's clock: link_up at 0
    disc.ctx.identity = {"acp_address": "fd00::1"}   # enrolled (in place)
    disc._solicit_out([Solicit("eth0")])
    assert len(disc.grasp.solicited) == 1 and disc.solicit.next_timer() is None
    disc._solicit_timer.close()

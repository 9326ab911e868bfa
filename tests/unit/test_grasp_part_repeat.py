"""The ACP GRASP part repeats the registrar's floods on a new channel for the new neighbour
only (loop count 1): with the original loop count every channel-up was a new flood across the
whole ACP (lab/sim measured the cold-start storm; docs/scaling.md)."""
from __future__ import annotations

import math
from typing import Any

import pytest

from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import EventBus
from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.flood_cache import FloodEntry
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.part import AcpGraspPart
from acp_openwrt.node_context import NodeContext

pytestmark = pytest.mark.unit


class FakeGrasp:
    """The two calls _repeat_floods makes on the GraspService."""

    def __init__(self, entries: dict[str, list[FloodEntry]]) -> None:
        self.entries = entries
        self.registered: set[str] = set()
        self.sent: list[tuple[int, list[tuple[Objective, Locator | None]], str]] = []

    def get_flood(self, asa: Any, name: str) -> list[FloodEntry]:
        return self.entries.get(name, [])

    def discoverable(self, name: str) -> bool:
        return name in self.registered

    def flood(self, asa: Any, ttl_ms: int, items: list[tuple[Objective, Locator | None]],
              ifname: str) -> None:
        self.sent.append((ttl_ms, items, ifname))


def test_a_new_channel_gets_the_registrar_flood_with_loop_count_one(tmp_path: Any) -> None:
    from acp_openwrt.config import AcpConfig
    config = AcpConfig(run_dir=tmp_path)
    part = AcpGraspPart(NodeContext(config=config, bus=EventBus(),
                                    control=ControlServer(tmp_path / "ctl")))
    locator = Locator(c.O_IPv6_LOCATOR, bytes(16), c.IPPROTO_TCP, 443)
    registrar = Objective("AN_join_registrar", c.F_SYNCH, 255, "EST-TLS")
    grasp = FakeGrasp({"AN_join_registrar": [
        FloodEntry(registrar, locator, bytes(16), "acp-1", math.inf, 0.0)]})
    part.grasp = grasp  # type: ignore[assignment]  # the seam: only get_flood and flood
    part._repeat_floods("acp-7")
    ((ttl_ms, items, ifname),) = grasp.sent
    assert ifname == "acp-7" and ttl_ms == 0
    ((objective, sent_locator),) = items
    assert objective == registrar._replace(loop_count=1) and sent_locator == locator
    assert part.floods_repeated == 1


def _part(tmp_path: Any) -> AcpGraspPart:
    from acp_openwrt.config import AcpConfig
    return AcpGraspPart(NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                                    control=ControlServer(tmp_path / "ctl")))


class DiscoveringGrasp(FakeGrasp):
    """Discovery answers only from the `answer_from`th try on (the first ones were lost: the
    neighbour's GRASP had not joined the new channel yet)."""

    def __init__(self, answer_from: int) -> None:
        super().__init__({})
        self.answer_from = answer_from
        self.tries: list[int] = []

    async def discover(self, asa: Any, objective: Objective, timeout_ms: int,
                       flush: bool, first: bool = False) -> list[Locator]:
        assert first  # the first answer ends the wait: a registrar now, not at the timeout
        self.tries.append(timeout_ms)
        if len(self.tries) < self.answer_from:
            return []
        return [Locator(c.O_IPv6_LOCATOR, bytes.fromhex("fd00" + "00" * 13 + "02"),
                        c.IPPROTO_TCP, 8443)]


def test_registrar_discovery_is_retried_and_then_announced_on_new_channels(
        tmp_path: Any) -> None:
    import asyncio
    part = _part(tmp_path)
    grasp = DiscoveringGrasp(answer_from=2)
    part.grasp = grasp  # type: ignore[assignment]
    part.interfaces.add("acp-1")
    asyncio.run(part._discover_until_known())
    assert grasp.tries == [1000, 2000]  # the lost first try did not end the search
    assert part._registrar_known() and part.est_server == ("fd00::2", 8443)
    asyncio.run(part._discover_until_known())
    assert grasp.tries == [1000, 2000]  # known: no more discovery
    # no flood of the registrar was cached, yet a new channel hears of it: the discovered
    # registrar is announced as a repeated flood would be (loop count 1)
    part._repeat_floods("acp-9")
    ((ttl_ms, items, ifname),) = grasp.sent
    ((objective, locator),) = items
    assert ifname == "acp-9" and 0 < ttl_ms <= 180_000
    assert objective == Objective("AN_join_registrar", c.F_SYNCH, 1, "EST-TLS")
    assert locator == Locator(c.O_IPv6_LOCATOR, bytes.fromhex("fd00" + "00" * 13 + "02"),
                              c.IPPROTO_TCP, 8443)


def test_registrar_discovery_gives_up_after_its_tries(tmp_path: Any) -> None:
    import asyncio
    part = _part(tmp_path)
    grasp = DiscoveringGrasp(answer_from=99)
    part.grasp = grasp  # type: ignore[assignment]
    part.interfaces.add("acp-1")
    asyncio.run(part._discover_until_known())
    assert grasp.tries == [1000, 2000, 4000, 8000]  # then the registrar's floods only
    assert not part._registrar_known() and grasp.sent == []


def test_the_registrar_node_does_not_discover_its_own_registrar(tmp_path: Any) -> None:
    """A node never hears its own floods; its registrar's objective is registered with its
    GRASP, and that counts as known: no M_DISCOVERY across the ACP on every new channel."""
    import asyncio
    part = _part(tmp_path)
    grasp = DiscoveringGrasp(answer_from=99)
    grasp.registered.add("AN_join_registrar")
    part.grasp = grasp  # type: ignore[assignment]
    part.interfaces.add("acp-1")
    assert part._registrar_known()
    asyncio.run(part._discover_until_known())
    assert grasp.tries == []

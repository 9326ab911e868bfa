"""A pledge that hears a join proxy imports the enrolled parts' modules ahead (issue 19): the
LDevID is then followed by the first channel sooner, and a pledge that hears none stays lean."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from acp_openwrt import coordinator
from acp_openwrt.config import AcpConfig
from acp_openwrt.coordinator import Node
from acp_openwrt.events import ProxyHeard

pytestmark = pytest.mark.unit


def test_proxy_heard_imports_the_enrolled_parts_once(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    imported: list[str] = []
    monkeypatch.setattr(coordinator, "part_names", lambda config, identity:
                        ["links.part:LinkPart"]
                        + (["rpl.part:RplPart", "channels.part:ChannelPart"]
                           if identity is not None else ["brski.pledge.part:PledgePart"]))
    monkeypatch.setattr(coordinator.importlib, "import_module", imported.append)
    monkeypatch.setattr(coordinator, "PRELOAD_DELAY_S", 0.01)
    node = Node(AcpConfig(run_dir=tmp_path), None)
    heard = ProxyHeard("fe80::1", 4433, "eth0")

    async def scenario() -> None:
        node.ctx.bus.subscribe(ProxyHeard, node._preload_enrolled_parts)
        assert imported == []  # nothing before a proxy is heard
        node.ctx.bus.publish(heard)
        await asyncio.sleep(0)
        assert imported == []  # the pledge's attempt goes first
        await asyncio.sleep(0.05)  # then one module per loop turn
        node.ctx.bus.publish(heard)
        for _ in range(3):
            await asyncio.sleep(0)
    asyncio.run(scenario())
    assert imported == ["acp_openwrt.rpl.part", "acp_openwrt.channels.part"]

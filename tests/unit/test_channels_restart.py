"""ChannelPart after an acpd restart, with a fake charon and fake netlink: the planner's adoption
carried out, and the adoption grace run by the part's one loop timer (no polling): an adopted
channel whose adjacency is never heard is removed when its grace ends, not before."""
from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import events
from acp_openwrt.channels import xfrm_interface as xi
from acp_openwrt.channels.driver import ChildSa, ConnInfo, IkeSa
from acp_openwrt.channels.part import ChannelPart
from acp_openwrt.channels.xfrm_interface import XfrmLink
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer
from acp_openwrt.core import CoreTimer
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext

CONN = "acp-256-eth0"


class FakeCharon:
    """What charon holds after acpd died: one established channel, one attempt."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.sas = [IkeSa(CONN, "1", "ESTABLISHED", True, "fe80::1", "fe80::2", "peer",
                          children=(ChildSa("c1", "INSTALLED"),)),
                    IkeSa("acp-257-eth0", "2", "CONNECTING", True, "fe80::1", "fe80::3", "x")]

    def list_connections(self) -> list[ConnInfo]:
        return [ConnInfo(CONN, ("fe80::1",), ("fe80::2",)),
                ConnInfo("acp-257-eth0", ("fe80::1",), ("fe80::3",))]

    def list_sas(self) -> list[IkeSa]:
        return self.sas

    def peer_certificates(self, remote_id: str) -> tuple[list[bytes], list[bytes]]:
        return [], []    # refused: the verdict does not matter here

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *map(str, args)))


def test_adopted_channel_is_removed_when_its_grace_ends(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    acp = [XfrmLink("acp_12340004", 5, 256, 2, True), XfrmLink("acp_99990001", 6, 300, 2, True)]
    deleted: list[int] = []
    monkeypatch.setattr(xi, "list_xfrm", lambda: acp)
    monkeypatch.setattr(xi, "delete_if_id", lambda if_id: deleted.append(if_id) or True)
    monkeypatch.setattr(xi, "delete_route", lambda peer, link: None)
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    downs: list[events.ChannelDown] = []
    ctx.bus.subscribe(events.ChannelDown, downs.append)
    part = ChannelPart(ctx, adoption_grace=0.3)
    charon = FakeCharon()

    async def main() -> tuple[bool, dict[str, Any]]:
        ex = concurrent.futures.ThreadPoolExecutor(1)
        part._vici_ex = part._acp_ex = part._dull_ex = ex
        part.driver = charon  # type: ignore[assignment]
        part.running = True
        part._timer = CoreTimer(part.table, part._timers_due, name="channels")
        await part._reconcile()
        entry = part.status()["channels"]
        await asyncio.sleep(0.15)
        still = part.table.get("eth0", "fe80::2") is not None
        await asyncio.sleep(0.4)
        for task in list(part._tasks):
            await task
        part.running = False
        part._timer.close()
        ex.shutdown()
        return still, entry

    still, entry = asyncio.run(main())
    assert [e["interface"] for e in entry] == ["acp_12340004"] and entry[0]["adopted"]
    assert ("terminate_conn", "acp-257-eth0") in charon.calls   # the attempt: unloaded
    assert ("unload_connection", "acp-257-eth0") in charon.calls
    assert still                                     # within the grace: kept
    assert len(part.table) == 0                      # after it: removed
    assert ("unload_connection", CONN) in charon.calls
    assert 300 in deleted and 256 in deleted         # the stray interface, then its own
    assert [d.acp_ifname for d in downs] == ["acp_12340004"]

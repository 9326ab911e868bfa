"""ChannelPart's clean-up with a fake charon and fake netlink: a channel that never had a
verified SA (a forged neighbour's attempt) is released and removed with charon calls only, no
netlink; one that was activated has its xfrm interface and route deleted as before. Under a
flood of forged neighbours those netlink calls, one set per attempt, queued a real neighbour's
activation behind them on the namespace's one worker (issue 15)."""
from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import events
from acp_openwrt.channels import xfrm_interface as xi
from acp_openwrt.channels.part import ChannelPart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext


class RecordingCharon:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append(name)


@pytest.mark.parametrize("activated", [False, True])
def test_remove_and_release_touch_the_kernel_only_for_an_activated_channel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, activated: bool) -> None:
    netlink: list[str] = []
    monkeypatch.setattr(xi, "delete_if_id", lambda if_id: netlink.append("delete_if_id"))
    monkeypatch.setattr(xi, "delete_route", lambda peer, link: netlink.append("delete_route"))
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    part = ChannelPart(ctx)
    charon = RecordingCharon()

    async def main() -> None:
        ex = concurrent.futures.ThreadPoolExecutor(1)
        part._vici_ex = part._acp_ex = part._dull_ex = ex
        part.driver = charon  # type: ignore[assignment]
        part.running = True
        released = part.new_channel(("eth0", "fe80::a:1"))
        removed = part.new_channel(("eth0", "fe80::a:2"))
        released.kernel = removed.kernel = activated
        await part._release(released)
        await part._remove(removed, ("7",))
        part.running = False
        ex.shutdown()

    asyncio.run(main())
    assert charon.calls == ["terminate_conn", "unload_connection",        # the release
                            "terminate_ike", "unload_connection"]         # the removal
    assert len(part.table) == 1   # the released one stays a candidate; the removed one is gone
    if activated:
        assert netlink == ["delete_if_id", "delete_route",                       # release: DULL
                           "delete_if_id", "delete_if_id", "delete_route"]       # remove: both
    else:
        assert netlink == []


def test_prepare_takes_our_link_local_from_the_links_part(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """One netlink lookup per DULL link, not one per attempt; a released link is asked anew."""
    lookups: list[str] = []
    monkeypatch.setattr(xi, "link_local_of",
                        lambda ifname: lookups.append(ifname) or "fe80::99")
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    part = ChannelPart(ctx)

    async def no_connection(ch: Any) -> None:
        return None

    monkeypatch.setattr(part, "_load_connection", no_connection)

    async def main() -> list[str | None]:
        ex = concurrent.futures.ThreadPoolExecutor(1)
        part._dull_ex = ex
        seen = []
        part._on_link_adopted(events.LinkAdopted("lan1", "eth0", 4, "fe80::1"))
        for peer in ("fe80::a:1", "fe80::a:2"):
            ch = part.new_channel(("eth0", peer))
            await part._prepare(ch)
            seen.append(ch.local_ll)
        part._on_link_released(events.LinkReleased("lan1", "eth0"))
        for peer in ("fe80::a:3", "fe80::a:4"):
            ch = part.new_channel(("eth0", peer))
            await part._prepare(ch)
            seen.append(ch.local_ll)
        ex.shutdown()
        return seen

    assert asyncio.run(main()) == ["fe80::1", "fe80::1", "fe80::99", "fe80::99"]
    assert lookups == ["eth0"]
    assert part.link_of == {"fe80::1": "eth0", "fe80::99": "eth0"}

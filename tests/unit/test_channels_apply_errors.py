"""A netlink refusal while preparing a channel (e.g. no xfrm interfaces in this kernel: errno 95)
is a logged, recorded channel failure with a retry, not an exception lost in a task."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from pyroute2.netlink.exceptions import NetlinkError

from acp_openwrt.channels.part import Channel, ChannelPart
from acp_openwrt.channels.peer_channel import Prepare
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext


def test_netlink_error_becomes_the_channels_last_error(tmp_path: Path) -> None:
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    service = ChannelPart(ctx)
    failed: list[str] = []
    fsm = SimpleNamespace(last_error=None,
                          initiate_failed=lambda now, why: failed.append(why) or [])
    ch = Channel(peer="fe80::2", dull_ifname="eth0", if_id=0x100, fsm=fsm)  # type: ignore[arg-type]

    async def refuse(_ch: Channel, _action: object) -> None:
        raise NetlinkError(95, "Operation not supported")

    service._do = refuse  # type: ignore[method-assign]
    asyncio.run(service._apply(ch, [Prepare()]))
    assert fsm.last_error is not None and "Operation not supported" in fsm.last_error
    assert failed and "Operation not supported" in failed[0]
    assert ch.prepared is False

"""The ubus object's pure side: how control answers and bus events become ubus replies and
events. The bridge itself runs against OpenWrt's real ubusd in tests/openwrt/."""
from __future__ import annotations

from pathlib import Path

import pytest

from acp_openwrt import events
from acp_openwrt.control.part import event_message, to_reply

pytestmark = pytest.mark.unit


def test_to_reply_shapes() -> None:
    assert to_reply("neighbors", []) == {"neighbors": []}
    assert to_reply("status", {"a": None, "b": {"c": None, "d": (1, 2)}}) == {"b": {"d": [1, 2]}}
    assert to_reply("rescan", 3) == {"result": 3}
    assert to_reply("enroll", None) == {}
    assert to_reply("x", [None, {"p": Path("/y")}]) == {"x": [{"p": "/y"}]}


def test_event_messages() -> None:
    assert event_message(events.ChannelDown("fe80::3", "acp_2")) == (
        "acp.channel", {"action": "down", "peer": "fe80::3", "interface": "acp_2"})
    assert event_message(events.LinkReleased("eth0", "eth0")) is None

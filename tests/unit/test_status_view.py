"""acpctl status's one-line summaries: right words for each state, never an exception."""
from __future__ import annotations

from typing import Any

import pytest

from acp_openwrt.commands.status_view import status_lines


def lines(data: dict[str, Any]) -> dict[str, str]:
    return dict(status_lines(data))


def test_not_enrolled_node() -> None:
    out = lines({"identity": None, "brski": {"state": "pledging", "attempts": 2, "proxies": [{}],
                                             "last_refusal": "voucher refused"},
                 "join_proxy": {"active": False}, "channels": {"running": False}})
    assert out["node"].startswith("not enrolled")
    assert out["brski"] == "pledging, 2 attempts, 1 proxies heard; last: voucher refused"
    assert out["join_proxy"] == "off (until enrolled)"
    assert out["channels"] == "off (no LDevID)"


def test_member_with_parent_and_proxy() -> None:
    out = lines({"rpl": {"running": True, "role": "member", "rank": 512, "dodag_id": "fd00::1",
                         "parents": [{"address": "fe80::1", "ifname": "acp_1", "preferred": True}],
                         "installed": [{}]},
                 "join_proxy": {"active": True, "registrar": {"address": "fd00::1", "port": 8443}},
                 "grasp": {"running": True, "interfaces": {"acp_1": {}}, "asas": []}})
    assert out["rpl"] == "member, rank 512, parent fe80::1%acp_1, 1 routes, DODAG fd00::1"
    assert out["join_proxy"] == "relaying to registrar [fd00::1]:8443"
    assert out["grasp"] == "on 1 channel interfaces, 0 ASAs"


@pytest.mark.parametrize("junk", [None, 3, "x", [], {"parents": 5, "running": True, "rank": 1},
                                  {"channels": [1, 2], "running": True},
                                  {"connects": [None]}])
def test_garbage_never_raises(junk: Any) -> None:
    data = {name: junk for name in ("channels", "rpl", "grasp", "connect", "brski",
                                    "join_proxy", "registrar", "ubus", "links", "discovery")}
    data["failed_parts"] = {}
    status_lines(data)

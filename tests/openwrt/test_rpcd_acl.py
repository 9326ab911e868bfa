"""luci-app-acp's rpcd ACL (luci/luci-app-acp/root/usr/share/rpcd/acl.d/luci-app-acp.json) as
OpenWrt's own rpcd and uhttpd enforce it, called the way LuCI's rpc.js calls /ubus.

acpd is not involved: a python-ubus 0.1.3 stand-in serves the ubus object `acp` (each method
declares uhttpd's ubus_rpc_session, the one argument uhttpd adds). So these tests prove the ACL
file and how rpcd reads it, not acpd's answers (test_acpd_ubus.py covers acpd behind the ACL).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from acp_openwrt.config.uci import parse_uci

if TYPE_CHECKING:
    from conftest import Rpcd, UbusObject, Uhttpd

ROOT = Path(__file__).resolve().parents[2]
READ = ("status", "interfaces", "neighbors", "channels", "rpl", "map", "brski")
WRITE = ("rescan", "enroll", "reload")
DENIED = {"code": -32002, "message": "Access denied"}
UBUS_PERMISSION_DENIED = 6


@pytest.fixture
def acp(ubus_object: Callable[..., UbusObject]) -> UbusObject:
    signature = {"ubus_rpc_session": "STRING"}
    return ubus_object("acp", {m: signature for m in READ + WRITE},
                       {m: {"answered": m} for m in READ + WRITE})


def test_login_gives_exactly_the_acl_files_grants(uhttpd: Uhttpd, rpcd: Rpcd) -> None:
    reply = uhttpd.rpc_call("0" * 32, "session", "login",
                            {"username": rpcd.user, "password": rpcd.password})
    status, session = reply["result"]
    assert status == 0
    assert session["acls"] == {"access-group": {"luci-app-acp": ["read"]},
                               "ubus": {"acp": list(READ), "uci": ["get"]},
                               "uci": {"acp": ["read"]}}
    assert session["data"] == {"username": rpcd.user}


def test_wrong_password_is_refused(uhttpd: Uhttpd, rpcd: Rpcd) -> None:
    reply = uhttpd.rpc_call("0" * 32, "session", "login",
                            {"username": rpcd.user, "password": rpcd.password + "x"})
    assert reply["result"] == [UBUS_PERMISSION_DENIED]


def test_viewer_reads_every_status_method(uhttpd: Uhttpd, rpcd: Rpcd, acp: UbusObject) -> None:
    session = uhttpd.login(rpcd.user, rpcd.password)
    for method in READ:
        reply = uhttpd.rpc_call(session, "acp", method)
        assert reply["jsonrpc"] == "2.0" and "error" not in reply, (method, reply)
        assert reply["result"] == [0, {"answered": method}], method
    # each read reached the object, carrying the caller's session as uhttpd adds it
    assert acp.calls() == [{"method": m, "args": {"ubus_rpc_session": session}} for m in READ]


@pytest.mark.parametrize("method", WRITE)
def test_viewer_cannot_act(uhttpd: Uhttpd, rpcd: Rpcd, acp: UbusObject, method: str) -> None:
    session = uhttpd.login(rpcd.user, rpcd.password)
    reply = uhttpd.rpc_call(session, "acp", method)
    assert reply.get("error") == DENIED and "result" not in reply
    assert acp.calls() == []


@pytest.mark.parametrize("session", ["f" * 32, "0" * 32, "not-a-session"])
def test_unknown_or_anonymous_session_reads_nothing(uhttpd: Uhttpd, rpcd: Rpcd, acp: UbusObject,
                                                    session: str) -> None:
    for method in ("status", "rescan"):
        assert uhttpd.rpc_call(session, "acp", method).get("error") == DENIED
    assert acp.calls() == []


def test_destroyed_session_reads_nothing(uhttpd: Uhttpd, rpcd: Rpcd, acp: UbusObject) -> None:
    session = uhttpd.login(rpcd.user, rpcd.password)
    assert uhttpd.rpc_call(session, "acp", "status")["result"][0] == 0
    rc, _ = rpcd.ubusd.call("session", "destroy", {"ubus_rpc_session": session})
    assert rc == 0
    assert uhttpd.rpc_call(session, "acp", "status").get("error") == DENIED
    assert len(acp.calls()) == 1


def _shipped_main_options() -> dict[str, str]:
    package = parse_uci((ROOT / "files" / "acp.config").read_text())
    main = next(s for s in package.sections if s.name == "main")
    return {o.name: o.values[0].text for o in main.options}


def test_uci_acp_readable_only_through_the_acl_files_uci_scope(uhttpd: Uhttpd,
                                                                rpcd: Rpcd) -> None:
    """LuCI's uci.load('acp') is `uci get {config: acp}`. The ACL grants ubus `uci get` and the
    uci scope acp (read), so a session holding luci-app-acp ALONE loads the page: acp is
    readable, other configs and any write are not."""
    (rpcd.config_dir / "acp").write_text((ROOT / "files" / "acp.config").read_text())
    (rpcd.config_dir / "network").write_text("config interface 'lan'\n\toption proto 'static'\n")
    session = uhttpd.login(rpcd.user, rpcd.password)
    status, data = uhttpd.rpc_call(session, "uci", "get", {"config": "acp"})["result"]
    assert status == 0
    main = data["values"]["main"]
    assert main[".type"] == "acp" and main[".anonymous"] is False
    assert {k: v for k, v in main.items() if not k.startswith(".")} == _shipped_main_options()
    # no scope for other configs, and acp is read-only
    for config in ("network", "rpcd"):
        assert uhttpd.rpc_call(session, "uci", "get", {"config": config})["result"] == [
            UBUS_PERMISSION_DENIED], config
    set_reply = uhttpd.rpc_call(session, "uci", "set", {"config": "acp", "section": "main",
                                                        "values": {"enabled": "0"}})
    assert set_reply.get("error") == DENIED  # ubus `uci set` is not granted at all
    assert "option enabled '1'" in (rpcd.config_dir / "acp").read_text()


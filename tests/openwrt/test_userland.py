"""The tier's fixtures against the behaviour of OpenWrt's own daemons that other tests rely on:
ubusd crashing, hanging and coming back; python-ubus taking only declared arguments; uhttpd
adding ubus_rpc_session to every call it forwards (so whatever serves `acp` behind LuCI must
accept that argument)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Rpcd, Ubusd, UbusObject, Uhttpd

INVALID_ARGUMENT = 2


def test_crashed_ubusd_leaves_its_socket_and_a_restart_takes_it_over(ubusd: Ubusd) -> None:
    first = ubusd.pid
    ubusd.kill()
    assert ubusd.socket.exists()
    rc, text = ubusd.call_raw(["list"])
    assert rc == 255 and "Failed to connect to ubus" in text
    ubusd.restart()
    assert ubusd.pid != first and ubusd.call_raw(["list"]) == (0, "")


def test_stopped_ubusd_hangs_the_cli_until_it_continues(ubusd: Ubusd,
                                                        ubus_object: Callable[..., UbusObject]
                                                        ) -> None:
    ubus_object("probe", {"ping": None})
    ubusd.pause()
    started = time.monotonic()
    rc, text = ubusd.call("probe", "ping", timeout=1)
    assert rc == ubusd.CLI_HUNG and "did not exit" in text
    assert time.monotonic() - started < 10
    ubusd.resume()
    assert ubusd.call("probe", "ping") == (0, {"object": "probe", "method": "ping"})


def test_teardown_copes_with_a_stopped_ubusd(ubusd: Ubusd) -> None:
    ubusd.pause()  # left stopped: the fixture continues it before it terminates it


def test_python_ubus_takes_exactly_the_declared_arguments(
        ubusd: Ubusd, ubus_object: Callable[..., UbusObject]) -> None:
    probe = ubus_object("probe", {"bare": None, "typed": {"name": "STRING", "n": "INT32"}})
    assert ubusd.list() == ["probe"] and ubusd.list("probe") == ["probe"]
    assert ubusd.call("probe", "bare")[0] == 0
    assert ubusd.call("probe", "bare", {"x": 1})[0] == 256 - INVALID_ARGUMENT
    assert ubusd.call("probe", "typed", {"name": "a"})[0] == 256 - INVALID_ARGUMENT
    assert ubusd.call("probe", "typed", {"name": "a", "n": 3})[0] == 0
    assert ubusd.call("nothing", "here") == (4, "Command failed: Not found")
    assert probe.calls() == [{"method": "bare", "args": {}},
                             {"method": "typed", "args": {"name": "a", "n": 3}}]


def test_uhttpd_adds_the_session_to_every_call(uhttpd: Uhttpd, rpcd: Rpcd,
                                               ubus_object: Callable[..., UbusObject]) -> None:
    probe = ubus_object("probe", {"bare": None, "session": {"ubus_rpc_session": "STRING"}})
    rpcd.add_acl("probe", {"probe": {"read": {"ubus": {"probe": ["bare", "session"]}}}})
    rpcd.add_login("prober", "probe-secret", read=("probe",))
    sid = uhttpd.login("prober", "probe-secret")
    assert uhttpd.rpc_call(sid, "probe", "bare")["result"] == [INVALID_ARGUMENT]
    assert uhttpd.rpc_call(sid, "probe", "session")["result"] == [
        0, {"object": "probe", "method": "session"}]
    assert probe.calls() == [{"method": "session", "args": {"ubus_rpc_session": sid}}]

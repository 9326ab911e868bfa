"""acpd against OpenWrt's own ubusd, rpcd, uhttpd and `ubus` CLI (built from
../shared/openwrt-userland): every method as `acpctl --json` answers it, LuCI's path through
uhttpd's /ubus with an rpcd session that holds only luci-app-acp's ACL, the hotplug script's
call, and a ubusd that hangs, dies, comes back or is not there at all."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.control.part import to_reply
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.topology import line
from acp_openwrt.netns import list_namespaces

ROOT = Path(__file__).resolve().parents[2]
READ_METHODS = ("status", "interfaces", "neighbors", "channels", "rpl", "map", "brski")
WRITE_METHODS = ("rescan", "enroll", "reload")
VIEWER, VIEWER_PASSWORD = "acpview", "acpview-secret"


def shape(value: Any) -> Any:
    """A reply with its numbers (uptimes, ages, counters) blurred: what must not differ
    between two reads a moment apart."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return value


def acpctl(node_socket: Path, method: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "acp_openwrt.acpctl", "--socket",
                           str(node_socket), method, "--json"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait(what: str, check: Any, timeout: float, interval: float = 0.05) -> float:
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def ubus_state(lab: AcpdLab) -> dict[str, Any]:
    return lab.ask("n1", "status")["ubus"]  # type: ignore[no-any-return]


@pytest.fixture
def lab(tmp_path: Path, ubusd: Any) -> Iterator[AcpdLab]:
    """Node n1 of a 2-node line, enrolled (every part runs), its ubus socket ubusd's."""
    lab = AcpdLab(line(2), tmp_path / "lab").up()
    try:
        lab.enrol("n1", f"option ubus_socket '{ubusd.socket}'")
        yield lab
    finally:
        lab.close()


def registered(ubusd: Any) -> bool:
    rc, listing = ubusd.call_raw(["list", "acp"])
    return rc == 0 and "acp" in listing


def test_every_method_answers_as_acpctl_does(lab: AcpdLab, ubusd: Any) -> None:
    lab.start_all(["n1"])
    wait("acp registered at ubusd", lambda: registered(ubusd), 10)
    sock = lab.nodes["n1"].socket
    for method in READ_METHODS:
        # Counters move between two reads, and a part may change state in between (the join
        # proxy starts serving): compare shapes, and read again (up to 3 times) before
        # calling a difference real.
        for attempt in range(3):
            rc, reply = ubusd.call("acp", method)
            assert rc == 0, (method, reply)
            assert "error" not in reply, (method, reply)
            expected = to_reply(method, acpctl(sock, method))
            if shape(reply) == shape(expected) or attempt == 2:
                break
            time.sleep(0.5)
        assert shape(reply) == shape(expected), method
        if method == "status":
            assert reply["ubus"]["connected"] is True
    # rescan has no acpctl subcommand: compare with the control socket's own answer
    assert ubusd.call("acp", "rescan")[1] == to_reply("rescan", lab.ask("n1", "rescan"))
    assert ubusd.call("acp", "reload")[1] == {"reloaded": False,
                                              "reason": "configuration unchanged"}
    rc, reply = ubusd.call("acp", "enroll", timeout=20)  # no registrar: says so, never hangs
    assert rc == 0 and ("state" in reply or "error" in reply), reply
    # LuCI's session argument is accepted (python-ubus answered "Invalid argument")
    rc, reply = ubusd.call("acp", "status", {"ubus_rpc_session": "0" * 32})
    assert rc == 0 and reply["enrolled"] is True


def test_luci_reads_through_uhttpd_with_only_the_packages_acl(
        lab: AcpdLab, ubusd: Any, rpcd: Any, uhttpd: Any) -> None:
    lab.start_all(["n1"])
    wait("acp registered at ubusd", lambda: registered(ubusd), 10)
    session = uhttpd.login(VIEWER, VIEWER_PASSWORD)
    # the view's uci.load('acp'): ubus `uci get`, scoped by the ACL to config acp
    (rpcd.config_dir / "acp").write_text((ROOT / "files" / "acp.config").read_text())
    status, data = uhttpd.rpc_call(session, "uci", "get", {"config": "acp"})["result"]
    assert status == 0 and data["values"]["main"]["enabled"] == "1"
    for method in READ_METHODS:
        answer = uhttpd.rpc_call(session, "acp", method, {})
        assert "error" not in answer, (method, answer)
        status, data = answer["result"]
        assert status == 0 and "error" not in data, (method, data)
    assert uhttpd.rpc_call(session, "acp", "status", {})["result"][1]["identity"][
        "acp_address"] == lab.acp_address("n1")
    # the ACP map as LuCI draws it: the node itself, reached, under the map's own keys
    status, acp_map = uhttpd.rpc_call(session, "acp", "map", {})["result"]
    assert status == 0 and acp_map["origin"] == lab.acp_address("n1"), acp_map
    assert acp_map["nodes"][0]["reached"] is True and acp_map["nodes"][0]["origin"] is True
    for method in WRITE_METHODS:
        answer = uhttpd.rpc_call(session, "acp", method, {})
        assert answer.get("error", {}).get("message") == "Access denied", (method, answer)
    calls = ubus_state(lab)["calls"]
    assert calls >= len(READ_METHODS) + 1  # the reads reached acpd; the writes did not
    assert uhttpd.rpc_call("f" * 32, "acp", "status", {}).get("error", {}).get(
        "message") == "Access denied"


def test_hotplug_script_asks_acpd_to_rescan(lab: AcpdLab, ubusd: Any, tmp_path: Path) -> None:
    """files/acp.hotplug as procd's hotplug-call runs it, with the real `ubus` CLI on its default
    socket path (/var/run/ubus/ubus.sock, bind-mounted onto the test's ubusd in a private mount
    namespace, so the script runs unchanged)."""
    lab.start_all(["n1"])
    wait("acp registered at ubusd", lambda: registered(ubusd), 10)
    before = ubus_state(lab)["calls"]
    script = (f"mount --make-rprivate / && mount -t tmpfs tmpfs /run && mkdir -p /run/ubus && "
              f"mount --bind {ubusd.socket.parent} /run/ubus && "
              f"ACTION=ifup INTERFACE=lan sh {ROOT / 'files' / 'acp.hotplug'} && wait")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=ubusd.env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    wait("the rescan call reached acpd", lambda: ubus_state(lab)["calls"] > before, 10)
    ignored = subprocess.run(["sh", str(ROOT / "files" / "acp.hotplug")], env={
        **ubusd.env, "ACTION": "add", "INTERFACE": "lan"}, timeout=10)
    assert ignored.returncode == 0


def test_ubusd_hung_killed_restarted_never_holds_acpd(lab: AcpdLab, ubusd: Any) -> None:
    node = lab.nodes["n1"]
    ubusd.pause()  # hung before acpd even starts
    lab.start_all(["n1"])
    wait("every part started", lambda: "ubus" in lab.ask("n1", "status"), 30)
    time.sleep(2.5)  # the bridge's first connection attempt is now waiting on the hung ubusd
    started = time.monotonic()
    assert acpctl(node.socket, "status")["ubus"]["connected"] is False
    assert time.monotonic() - started < 2, "acpctl status waited on the hung ubusd"
    ubusd.resume()
    back = wait("registered after ubusd resumed", lambda: registered(ubusd), 2.5)
    assert ubus_state(lab)["connected"] is True

    ubusd.pause()
    gone = wait("connected false with ubusd hung", lambda: not ubus_state(lab)["connected"], 5)
    ubusd.resume()
    wait("registered after the hang", lambda: registered(ubusd), 2.5)

    ubusd.kill()  # the socket file stays, as after a crash
    assert ubusd.socket.exists()
    dead = wait("connected false with ubusd dead", lambda: not ubus_state(lab)["connected"], 5)
    restarted_at = time.monotonic()
    ubusd.restart()
    wait("registered at the new ubusd", lambda: registered(ubusd), 2.5)
    again = time.monotonic() - restarted_at
    print(f"resume->registered {back:.2f} s, hang->disconnected {gone:.2f} s, "
          f"kill->disconnected {dead:.2f} s, restart->registered {again:.2f} s")

    ubusd.pause()  # SIGTERM with ubusd hung: acpd exits in time and removes what it made
    started = time.monotonic()
    rc = node.stop(signal.SIGTERM, timeout=10)
    took = time.monotonic() - started
    ubusd.resume()
    assert rc == 0 and took < 5, (rc, took)
    assert not {node.dull_ns, node.acp_ns} & set(list_namespaces())


def test_no_ubusd_at_all(lab: AcpdLab, ubusd: Any) -> None:
    ubusd.stop()
    if ubusd.socket.exists():
        os.unlink(ubusd.socket)
    lab.start_all(["n1"])
    wait("every part started", lambda: "ubus" in lab.ask("n1", "status"), 30)
    state = ubus_state(lab)
    assert state["connected"] is False and "no ubusd socket" in state["reason"]
    ubusd.restart()
    wait("registered once ubusd appears", lambda: registered(ubusd), 2.5)

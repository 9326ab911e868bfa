"""`acpctl diagnose` against a real control socket with canned answers and a real LDevID file."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import acpctl
from acp_openwrt.commands import diagnose as diagnose_cmd
from acp_openwrt.control import ControlServer
from acp_openwrt.control.server import RequestError
from acp_openwrt.lab.pki import TestCA

NAMESPACES = {"dull": "diag-test-dull", "acp": "diag-test-acp"}
UTC = dt.UTC
REAL_LOCAL_NAMESPACES = diagnose_cmd.local_namespaces


def answers(cert: Path) -> dict[str, Any]:
    """A healthy member node's replies (shapes as acpd sends them)."""
    channel = {"interface": "acp_100", "peer": "fe80::2", "dull_interface": "eth0",
               "peer_node_name": "fd89b714f3db00000200000064000000+@acp.example.com",
               "state": "up", "role": "follower", "last_error": None}
    neighbour = {"peer": "fe80::2", "interface": "eth0", "methods": ["IKEv2"], "port": 500}
    interface = {"host_interface": "eth0", "method": "veth", "dull_interface": "eth0",
                 "link_local": "fe80::1", "up_for_s": 9.0}
    route = {"prefix": "::/0", "kind": "unicast", "gateway": "fe80::2", "ifname": "acp_100"}
    rpl = {"role": "member", "rank": 512, "dodag_id": "fd89:b714:f3db:0:200:0:6400:0",
           "interfaces": ["acp_100"], "routes": [route], "installed": [route],
           "parents": [{"address": "fe80::2", "ifname": "acp_100", "preferred": True}]}
    brski = {"state": "enrolled", "proxies": [], "renewal_failures": 0, "ldevid": str(cert)}
    status = {"version": "0.1.0", "enrolled": True, "namespaces": NAMESPACES,
              "identity": {"acp_node_name": "fd89b714f3db00000200000064000001+@acp.example.com",
                           "acp_address": "fd89:b714:f3db:0:200:0:6400:1"},
              "parts": ["links", "rpl", "grasp", "channels", "discovery", "brski"],
              "failed_parts": {}, "links": {"interfaces": [interface], "errors": {}},
              "grasp": {"running": True, "interfaces": {"acp_100": "fe80::1"}},
              "channels": {"running": True, "channels": [channel]},
              "discovery": {"neighbors": [neighbour]}, "rpl": rpl, "brski": brski}
    return {"status": status, "interfaces": [interface], "neighbors": [neighbour],
            "channels": [channel], "rpl": rpl, "brski": brski}


@contextlib.contextmanager
def serving(path: Path, replies: dict[str, Any]) -> Iterator[Path]:
    """A real ControlServer on its own loop thread; an Exception reply is refused."""
    server = ControlServer(path)

    def handler(reply: Any) -> Any:
        def answer(_request: dict[str, Any]) -> Any:
            if isinstance(reply, Exception):
                raise RequestError(str(reply))
            return reply
        return answer
    for cmd, reply in replies.items():
        server.register(cmd, handler(reply))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "ca", domain="acp.example.com")


@pytest.fixture(autouse=True)
def with_diagnose(monkeypatch: pytest.MonkeyPatch) -> None:
    """acpctl as it will be once "diagnose" is in COMMANDS; the box has our namespaces."""
    if "diagnose" not in acpctl.COMMANDS:
        monkeypatch.setattr(acpctl, "COMMANDS", acpctl.COMMANDS + ("diagnose",))
    monkeypatch.setattr(diagnose_cmd, "local_namespaces", lambda: sorted(NAMESPACES.values()))


def run(capsys: pytest.CaptureFixture[str], socket: Path, *argv: str) -> tuple[int, str, str]:
    rc = acpctl.main(["--socket", str(socket), "diagnose", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_healthy_node(tmp_path: Path, ca: TestCA, capsys: pytest.CaptureFixture[str]) -> None:
    cert = ca.issue_node("a", acp_node_name="fd89b714f3db00000200000064000001+@acp.example.com")
    with serving(tmp_path / "acpd.sock", answers(cert.cert_path)) as sock:
        rc, out, err = run(capsys, sock)
        assert rc == 0 and err == ""
        lines = out.splitlines()
        assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
        rows = {line.split("  ")[0].strip(): line for line in lines[1:] if line}
        assert "ok" in rows["certificate"] and "days left" in rows["certificate"]
        assert "parent fe80::2 on acp_100" in rows["rpl"]
        assert lines[-1] == "no broken link found"
        rc, out, _ = run(capsys, sock, "--json")
        data = json.loads(out)
        assert rc == 0 and data["healthy"] is True and data["first_broken"] is None
        results = {c["name"]: c["result"] for c in data["checks"]}
        assert results.pop("join proxy") == "skip"  # this node runs no join proxy
        assert set(results.values()) == {"ok"}


def test_expired_certificate_fails(tmp_path: Path, ca: TestCA,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(UTC)
    cert = ca.issue_node("old", acp_node_name="fd89b714f3db00000200000064000001+@acp.example.com",
                         not_before=now - dt.timedelta(days=400),
                         not_after=now - dt.timedelta(days=10))
    with serving(tmp_path / "acpd.sock", answers(cert.cert_path)) as sock:
        rc, out, _ = run(capsys, sock)
    assert rc == 1
    assert "first broken link: certificate: " in out and "expired" in out
    assert "what to do: " in out and "acpctl brski" in out


def test_not_yet_valid_certificate_fails(tmp_path: Path, ca: TestCA,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(UTC)
    cert = ca.issue_node("new", acp_node_name="fd89b714f3db00000200000064000001+@acp.example.com",
                         not_before=now + dt.timedelta(days=2),
                         not_after=now + dt.timedelta(days=90))
    with serving(tmp_path / "acpd.sock", answers(cert.cert_path)) as sock:
        rc, out, _ = run(capsys, sock)
    assert rc == 1 and "first broken link: certificate: " in out and "not valid before" in out


def test_key_that_is_not_the_certificates_fails(tmp_path: Path, ca: TestCA,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The files a half-done renewal left: a new key beside the old certificate."""
    name = "fd89b714f3db00000200000064000001+@acp.example.com"
    cert, other = ca.issue_node("a", acp_node_name=name), ca.issue_node("b", acp_node_name=name)
    replies = answers(cert.cert_path)
    replies["brski"]["ldevid_key"] = str(cert.key_path)
    with serving(tmp_path / "acpd.sock", replies) as sock:
        rc, out, _ = run(capsys, sock)
    assert rc == 0 and "no broken link found" in out
    replies["brski"]["ldevid_key"] = str(other.key_path)
    with serving(tmp_path / "acpd.sock", replies) as sock:
        rc, out, _ = run(capsys, sock)
        assert rc == 1
        assert f"first broken link: certificate: ldevid_key {other.key_path} is not the key " \
               f"of the LDevID certificate" in out
        rc, out, _ = run(capsys, sock, "--cert", str(other.cert_path), "--key",
                         str(other.key_path))
        assert rc == 0  # the operator's own pair
        rc, out, _ = run(capsys, sock, "--cert", str(cert.cert_path), "--key",
                         str(tmp_path / "gone.key"))
        assert rc == 1 and "gone.key: No such file or directory" in out


def test_override_cert_that_cannot_be_read(tmp_path: Path, ca: TestCA,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cert = ca.issue_node("a", acp_node_name="fd89b714f3db00000200000064000001+@acp.example.com")
    with serving(tmp_path / "acpd.sock", answers(cert.cert_path)) as sock:
        rc, out, _ = run(capsys, sock, "--cert", str(tmp_path / "missing.pem"), "--json")
    broken = json.loads(out)["first_broken"]
    assert rc == 1 and broken["name"] == "certificate" and "missing.pem" in broken["detail"]


def test_channel_failure_and_refused_commands(tmp_path: Path, ca: TestCA,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cert = ca.issue_node("a", acp_node_name="fd89b714f3db00000200000064000001+@acp.example.com")
    replies = answers(cert.cert_path)
    bad = {"peer": "fe80::2", "dull_interface": "eth0", "state": "connecting", "role": "decider",
           "interface": None, "last_error": "peer not in domain acp.example.com"}
    replies["channels"] = [bad]
    replies["status"]["rpl"] = replies["rpl"] = {"role": "unattached", "interfaces": [],
                                                 "parents": [], "routes": []}
    replies["brski"] = RuntimeError("brski is busy")    # refused: the status copy is used
    del replies["neighbors"]                            # unknown command: likewise
    with serving(tmp_path / "acpd.sock", replies) as sock:
        rc, out, _ = run(capsys, sock)
    assert rc == 1
    assert ("first broken link: channel fe80::2%eth0: connecting, last error: peer not in "
            "domain acp.example.com") in out
    assert "days left" in out  # the LDevID path came from status' brski copy


def test_missing_namespace_on_this_box(tmp_path: Path, ca: TestCA,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The real /run/netns listing: these names do not exist on this machine."""
    monkeypatch.setattr(diagnose_cmd, "local_namespaces", REAL_LOCAL_NAMESPACES)
    cert = ca.issue_node("a", acp_node_name="fd89b714f3db00000200000064000001+@acp.example.com")
    with serving(tmp_path / "acpd.sock", answers(cert.cert_path)) as sock:
        rc, out, _ = run(capsys, sock)
    assert rc == 1 and "first broken link: namespaces: namespace diag-test-dull" in out


def test_unreachable_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, tmp_path / "none.sock")
    assert rc == 2 and out == ""
    assert err.startswith("acpctl: cannot diagnose, acpd unreachable: ")
    assert "is acpd running?" in err and err.count("\n") == 1

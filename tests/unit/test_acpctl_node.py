"""acpctl status/interfaces/neighbors/proxy against a real control socket with canned answers."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from acp_openwrt.acpctl import main
from acp_openwrt.control import ControlServer

STATUS = {"version": "0.1.0", "uptime_s": 3.0, "enrolled": True,
          "identity": {"acp_node_name": "fd89b714f3db00000200000064000000+@acp.example.com",
                       "acp_address": "fd89:b714:f3db:0:200:0:6400:0", "prefix_length": 127,
                       "scheme": "zone", "acp_domain": "acp.example.com"},
          "namespaces": {"dull": "acp-dull", "acp": "acp"},
          "links": {"interfaces": [{"host_interface": "eth0"}]},
          "discovery": {"neighbors": [{}, {}]},
          "rpl": {"role": "root", "rank": 256, "parents": [], "running": True,
                  "installed": [{}, {}], "dodag_id": "fd89:b714:f3db:0:200:0:6400:0"},
          "channels": {"running": True, "channels": [
              {"state": "up"}, {"state": "up"}, {"state": "connecting", "last_error": "timeout"}]},
          "brski": {"state": "enrolled", "next_renewal": "2027-04-23T14:34:48+00:00"},
          "failed_parts": {"connect": "OSError: boom"}}
INTERFACES = [{"host_interface": "br-lan", "method": "veth", "dull_interface": "br-lan",
               "link_local": "fe80::1", "up_for_s": 2.0}]
NEIGHBORS = [{"peer": "fe80::2", "interface": "br-lan", "methods": ["IKEv2"], "port": 500,
              "ttl_s": 200.0, "floods_heard": 3, "confirmed": "reheard"}]
PROXY = {"active": True, "user": "nobody", "pid": 42, "restarts": 0, "registrar": None,
         "listeners": [{"ifname": "eth0", "address": "fe80::1", "port": 40000, "serving": False}],
         "connections": []}


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "acpd.sock"
    server = ControlServer(path)
    for cmd, answer in (("status", STATUS), ("interfaces", INTERFACES),
                        ("neighbors", NEIGHBORS), ("proxy", PROXY)):
        server.register(cmd, lambda req, a=answer: a)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield path
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_status_human_and_json(socket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--socket", str(socket_path), "status")
    assert rc == 0
    assert "fd89:b714:f3db:0:200:0:6400:0/127 (zone)" in out
    assert "1 adopted, 2 neighbours heard" in out
    assert "root, rank 256, 2 routes" in out
    assert "1 connecting, 2 up; last error: timeout" in out
    assert "enrolled, renewal due 2027-04-23" in out
    assert "FAILED     connect: OSError: boom" in out
    rc, out, _ = run(capsys, "--socket", str(socket_path), "status", "--json")
    assert json.loads(out) == STATUS


def test_tables(socket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--socket", str(socket_path), "interfaces")
    assert rc == 0
    assert out.splitlines()[0].split() == ["HOST", "METHOD", "DULL", "LINK-LOCAL", "UP(s)"]
    assert out.splitlines()[1].split() == ["br-lan", "veth", "br-lan", "fe80::1", "2.0"]
    rc, out, _ = run(capsys, "--socket", str(socket_path), "neighbors", "--json")
    entry = json.loads(out)[0]
    assert {"peer", "interface", "methods"} <= entry.keys()
    rc, out, _ = run(capsys, "--socket", str(socket_path), "neighbors")
    assert out.splitlines()[1].split() == ["fe80::2", "br-lan", "IKEv2", "500", "200.0", "3",
                                           "reheard"]
    rc, out, _ = run(capsys, "--socket", str(socket_path), "proxy")
    assert rc == 0 and "none known" in out and "40000" in out


def test_no_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--socket", str(tmp_path / "none.sock"), "status")
    assert rc == 2 and out == "" and "is acpd running" in err and err.count("\n") == 1

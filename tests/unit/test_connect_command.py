"""`acpctl connect` against a real control socket with a canned answer."""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.commands import CommandError
from acp_openwrt.commands import connect as command
from acp_openwrt.control import ControlServer

STATUS = {"active": True, "reason": None, "namespace": "acp", "connects": [
    {"name": "bmc", "device": "eth2", "state": "up", "error": None,
     "subnet": "fd73:9fc2:3c34:2001::/64", "source": "subnet_id",
     "router": "fd73:9fc2:3c34:2001::1", "relay": "fd73:9fc2:3c34:2001:ffff:ffff:ffff:ffff",
     "ra": {"ra_sent": 4, "rs_received": 1, "rs_dropped": 0, "send_errors": 0},
     "relays": [{"protocol": "tcp", "listen": "[fd73:9fc2:3c34:2001:ffff:ffff:ffff:ffff]:443",
                 "target": "192.168.0.2:443", "active": 1, "max_connections": 16,
                 "idle_timeout": 300, "counters": {"refused": 2}}]},
    {"name": "nms", "device": "eth3", "state": "missing", "error": "device eth3 not found",
     "subnet": None, "source": None, "router": None, "relay": None, "ra": None, "relays": []},
]}


def serve(answer: Any, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "acpd.sock"
    server = ControlServer(path)
    server.register("connect", lambda req: answer)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield path
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    yield from serve(STATUS, tmp_path)


def run(socket: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", type=Path)
    command.register(parser.add_subparsers())
    args = parser.parse_args(["--socket", str(socket), "connect", *argv])
    return args.func(args)


def test_table(socket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(socket_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "DEVICE", "STATE", "SUBNET", "ROUTER", "SOURCE", "RA",
                              "SENT", "RS"]
    assert out[1].split() == ["bmc", "eth2", "up", "fd73:9fc2:3c34:2001::/64",
                              "fd73:9fc2:3c34:2001::1", "subnet_id", "4", "1"]
    assert out[2].split()[:3] == ["nms", "eth3", "missing"]
    assert "nms: device eth3 not found" in out
    relay_row = next(line for line in out if line.startswith("bmc ") and "192.168.0.2" in line)
    assert relay_row.split() == ["bmc", "[fd73:9fc2:3c34:2001:ffff:ffff:ffff:ffff]:443",
                                 "192.168.0.2:443", "tcp", "1", "16", "2", "0"]


def test_json(socket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(socket_path, "--json") == 0
    assert json.loads(capsys.readouterr().out) == STATUS


def test_inactive_and_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in serve({"active": False, "reason": "no ACP address", "connects": []}, tmp_path):
        assert run(path) == 0
    out = capsys.readouterr().out
    assert "inactive: no ACP address" in out and "no ACP connect interfaces configured" in out
    for path in serve(["not", "an", "object"], tmp_path):
        with pytest.raises(CommandError, match="not an object"):
            run(path)
    with pytest.raises(CommandError):
        run(tmp_path / "nobody.sock")

"""`acpctl channels`: table and --json from the node's "channels" control command."""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.channels.part import ChannelPart
from acp_openwrt.commands import CommandError
from acp_openwrt.commands.channels import register
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext

ENTRY = {"interface": "acp_12340004", "peer": "fe80::2", "dull_interface": "eth0",
         "peer_node_name": "fd00000000000000000000001234004+@acp.example.com", "state": "up",
         "role": "decider", "sa_age": 3725, "bytes": 1234, "last_error": None}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acpctl")
    p.add_argument("--socket", type=Path)
    register(p.add_subparsers(dest="command", required=True))
    return p


def call(tmp_path: Path, handler: Any, *argv: str) -> int:
    async def main() -> int:
        server = ControlServer(tmp_path / "acpd.sock")
        server.register("channels", handler)
        await server.start()
        try:
            args = parser().parse_args(["--socket", str(server.path), *argv])
            return await asyncio.get_running_loop().run_in_executor(None, args.func, args)
        finally:
            await server.stop()
    return asyncio.run(main())


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert call(tmp_path, lambda _r: [ENTRY], "channels", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [ENTRY]


def test_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert call(tmp_path, lambda _r: [ENTRY], "channels") == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["INTERFACE", "PEER"]
    assert "acp_12340004" in line and "1h02m" in line and "decider" in line


def test_no_node_is_one_line_error(tmp_path: Path) -> None:
    args = parser().parse_args(["--socket", str(tmp_path / "none.sock"), "channels"])
    with pytest.raises(CommandError, match="no control socket"):
        args.func(args)


def test_service_without_ldevid_answers_empty(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = AcpConfig(run_dir=tmp_path / "run", log_dir=tmp_path / "log")

    async def main() -> Any:
        ctx = NodeContext(config, EventBus(), ControlServer(config.control_socket))
        service = ChannelPart(ctx)
        await service.start()
        reply = await ctx.control.dispatch(b'{"cmd": "channels"}')
        await service.stop()
        return reply, service.status()
    reply, status = asyncio.run(main())
    assert reply == {"ok": True, "result": []}
    assert status["running"] is False and status["channels"] == []

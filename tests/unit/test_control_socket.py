"""The control socket: JSON lines both ways, refusals as one-line errors, never a dead server."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from acp_openwrt.control import ControlClientError, ControlServer, RequestError, request


def serve(tmp_path: Path, body) -> None:
    """Run a server with a few commands on a loop thread while `body(path)` talks to it."""
    path = tmp_path / "acpd.sock"
    server = ControlServer(path)
    server.register("echo", lambda req: req.get("value"))

    async def slow(req):
        await asyncio.sleep(0.01)
        return {"slow": True}
    server.register("slow", slow)

    def refuse(req):
        raise RequestError("no such neighbour")
    server.register("refuse", refuse)
    server.register("crash", lambda req: 1 / 0)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        body(path)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert not path.exists()


def test_commands_answer(tmp_path: Path) -> None:
    def body(path: Path) -> None:
        assert request(path, "echo", value=[1, "x"]) == [1, "x"]
        assert request(path, "slow") == {"slow": True}
        assert "echo" in request(path, "help")
        with pytest.raises(ControlClientError, match="no such neighbour"):
            request(path, "refuse")
        with pytest.raises(ControlClientError, match="internal error"):
            request(path, "crash")
        with pytest.raises(ControlClientError, match="unknown command"):
            request(path, "nope")
        assert request(path, "echo", value=2) == 2  # still serving after the crash
    serve(tmp_path, body)


def test_garbage_lines_get_errors(tmp_path: Path) -> None:
    import socket

    def body(path: Path) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(b"not json\n[1]\n" + b"x" * 70000 + b"\n")
            data = b""
            while data.count(b"\n") < 3:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        lines = data.splitlines()
        assert b"not JSON" in lines[0]
        assert b'string' in lines[1] and b'cmd' in lines[1]
        assert b"too long" in lines[2]
    serve(tmp_path, body)


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlClientError, match="is acpd running"):
        request(tmp_path / "missing.sock", "status")

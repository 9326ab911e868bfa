"""The control socket: JSON lines both ways, refusals as one-line errors, never a dead server."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from acp_openwrt.control import ControlClientError, ControlServer, RequestError, request


def serve(tmp_path: Path, body) -> None:
    """Run a server with a few commands on a loop thread while `body(path)` talks to it."""

    async def slow(req):
        await asyncio.sleep(0.01)
        return {"slow": True}

    def refuse(req):
        raise RequestError("no such neighbour")

    def more(server: ControlServer) -> None:
        server.register("slow", slow)
        server.register("refuse", refuse)
        server.register("crash", lambda req: 1 / 0)
    _serve_with(tmp_path, body, setup=more)
    assert not (tmp_path / "acpd.sock").exists()


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


def _serve_with(tmp_path: Path, body, setup=None, **kwargs) -> ControlServer:
    """Like `serve`, with server options (short timeouts), returning the server for its counters."""
    path = tmp_path / "acpd.sock"
    server = ControlServer(path, **kwargs)
    server.register("echo", lambda req: req.get("value"))
    if setup is not None:
        setup(server)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        body(path)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    return server


def _read_line(sock, deadline_s: float = 5.0) -> bytes:
    """Everything up to the first newline (or EOF / reset), within `deadline_s`."""
    import time
    sock.settimeout(deadline_s)
    data = b""
    end = time.monotonic() + deadline_s
    while b"\n" not in data and time.monotonic() < end:
        try:
            chunk = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[0]


def _is_closed(sock) -> bool:
    """True if the server closed its end (EOF or reset) within a second."""
    sock.settimeout(1.0)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_silent_clients_time_out_and_acpctl_gets_in(tmp_path: Path) -> None:
    import json
    import socket
    import time

    def body(path: Path) -> None:
        silent = []
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            silent.append(s)
        try:
            time.sleep(0.1)
            # the 17th: a JSON "busy" answer, then the server closes (no reset, no silence)
            with pytest.raises(ControlClientError, match="busy"):
                request(path, "echo", value=1, timeout=2)
            started = time.monotonic()
            replies = [json.loads(_read_line(s)) for s in silent]
            assert time.monotonic() - started < 3
            assert all(r["ok"] is False and "timeout" in r["error"] for r in replies)
            assert all(_is_closed(s) for s in silent)
            assert request(path, "echo", value=2, timeout=2) == 2
        finally:
            for s in silent:
                s.close()
    server = _serve_with(tmp_path, body, idle_timeout=0.5)
    assert server.counters["busy"] == 1
    assert server.counters["timeouts"] == 16


def test_busy_answer_is_json_even_before_the_client_writes(tmp_path: Path) -> None:
    import json
    import socket

    def body(path: Path) -> None:
        held = []
        try:
            for _ in range(2):
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(path))
                held.append(s)
            with socket.socket(socket.AF_UNIX) as extra:
                extra.connect(str(path))
                reply = json.loads(_read_line(extra))
                assert reply["ok"] is False and reply["error"].startswith("busy: ")
                assert _is_closed(extra)
        finally:
            for s in held:
                s.close()
    server = _serve_with(tmp_path, body, idle_timeout=5, max_clients=2)
    assert server.counters["busy"] == 1


def test_slowloris_hits_a_per_request_deadline(tmp_path: Path) -> None:
    import json
    import socket
    import time

    def body(path: Path) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            started = time.monotonic()
            request_bytes = b'{"cmd": "echo", "value": "' + b"x" * 100
            closed_at = None
            # one byte every 0.1 s: each read is quick, the line never ends
            for byte in request_bytes:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed_at = time.monotonic()
                    break
                time.sleep(0.1)
            reply = json.loads(_read_line(s))
            assert reply["ok"] is False and "timeout" in reply["error"]
            assert closed_at is None or closed_at - started < 2.5
    server = _serve_with(tmp_path, body, idle_timeout=1.0)
    assert server.counters["timeouts"] == 1


def test_a_client_may_send_many_requests_on_one_connection(tmp_path: Path) -> None:
    import json
    import socket
    import time

    def body(path: Path) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            for i in range(4):  # 4 x 0.4 s > the 1 s deadline: the deadline is per request
                time.sleep(0.4)
                s.sendall(json.dumps({"cmd": "echo", "value": i}).encode() + b"\n")
                assert json.loads(_read_line(s)) == {"ok": True, "result": i}
    server = _serve_with(tmp_path, body, idle_timeout=1.0)
    assert server.counters["timeouts"] == 0


@pytest.mark.parametrize("line, reason", [
    (b"[" * 40000, "too deep"),
    (b'{"cmd": "echo", "value": ' + b"[" * 20000 + b"]" * 20000 + b"}", "too deep"),
    (b'{"a":' * 8000 + b"1" + b"}" * 8000, "too deep"),
    (b'{"cmd": "echo", "value": "\xff\xfe"}', "UTF-8"),
    ('{"cmd": "echo"}'.encode("utf-16"), "UTF-8"),
    (b'{"cmd": "echo", "value": ' + b"1" * 5000 + b"}", "not JSON"),
    (b"not json", "not JSON"),
    (b'"a string"', "object"),
    (b"[1, 2]", "object"),
    (b'{"cmd": 7}', "object"),
    (b"x" * 70000, "too long"),
], ids=["40k-brackets", "deep-value", "deep-objects", "bad-utf8", "utf16", "huge-int",
        "not-json", "string", "array", "cmd-not-string", "too-long"])
def test_malformed_requests_get_a_json_error(tmp_path: Path, line: bytes, reason: str) -> None:
    import json
    import socket

    def body(path: Path) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(line + b"\n")
            reply = json.loads(_read_line(s))
            assert reply["ok"] is False and reason in reply["error"]
        assert request(path, "echo", value=3) == 3  # and the server still answers
    server = _serve_with(tmp_path, body, idle_timeout=5)
    assert server.counters["malformed"] == 1


def test_nesting_within_the_bound_is_answered(tmp_path: Path) -> None:
    value: object = "leaf"
    for _ in range(15):  # 31 levels with the request object: just inside the bound of 32
        value = {"k": [value]}

    def body(path: Path) -> None:
        assert request(path, "echo", value=value) == value
        assert request(path, "echo", value="[[[{{{\\\"") == "[[[{{{\\\""  # brackets in strings
    _serve_with(tmp_path, body, idle_timeout=5)


def test_status_reports_the_drops(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "x.sock")
    assert server.status() == {"clients": 0, "max_clients": 16, "idle_timeout_s": 10.0,
                               "counters": {"timeouts": 0, "busy": 0, "malformed": 0}}


def test_stop_hangs_up_on_connected_clients(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "acpd.sock"
    server = ControlServer(path, idle_timeout=30)

    async def scenario() -> None:
        await server.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        await loop.sock_connect(sock, str(path))
        for _ in range(100):
            if server.status()["clients"] == 1:
                break
            await asyncio.sleep(0.01)
        assert server.status()["clients"] == 1
        await asyncio.wait_for(server.stop(), 2)
        assert server.status()["clients"] == 0
        assert await asyncio.wait_for(loop.sock_recv(sock, 100), 2) == b""  # hung up, no wait
        sock.close()
    asyncio.run(scenario())


def test_node_status_carries_the_control_counters(tmp_path: Path) -> None:
    from acp_openwrt.config import AcpConfig
    from acp_openwrt.coordinator import Node
    node = Node(AcpConfig(control_socket=tmp_path / "acpd.sock"), None)
    node.ctx.control.counters["busy"] = 3
    assert node.status()["control"]["counters"]["busy"] == 3

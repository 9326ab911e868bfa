"""The ubus bridge against a fake python-ubus (injected as sys.modules["ubus"]) and a real
control socket: replies, errors, events, the one-thread rule, reconnects, and no python-ubus."""
from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

from acp_openwrt import events
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer, RequestError
from acp_openwrt.control.ubus_bridge import UbusBridge, event_message, to_reply
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext


class FakeUbusd:
    """What python-ubus would talk to: records every call and the thread it came from."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.connected: str | None = None
        self.connects = 0
        self.objects: dict[str, dict[str, Any]] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.send_ok = True
        self.calls: queue.Queue[tuple[str, str, dict[str, Any], queue.Queue[Any]]] = queue.Queue()

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("ubus")

        def connect(path: str) -> None:
            self.threads.add(threading.get_ident())
            if self.connected:
                raise OSError("already connected")
            self.connected, self.connects = path, self.connects + 1

        def disconnect() -> None:
            self.threads.add(threading.get_ident())
            if not self.connected:
                raise OSError("not connected")
            self.connected = None
            self.objects.clear()

        def add(name: str, methods: dict[str, Any]) -> None:
            self.threads.add(threading.get_ident())
            for spec in methods.values():
                assert set(spec) == {"method", "signature"} and callable(spec["method"])
            self.objects[name] = methods

        def loop(timeout_ms: int) -> None:
            self.threads.add(threading.get_ident())
            try:
                obj, method, data, answer = self.calls.get(timeout=timeout_ms / 1000)
            except queue.Empty:
                return
            spec = self.objects.get(obj, {}).get(method)
            if spec is None:
                answer.put(("not found", None))
                return
            req = types.SimpleNamespace(replies=[])
            req.reply = req.replies.append
            spec["method"](req, data)
            answer.put(("ok", req.replies))

        def send(name: str, data: dict[str, Any]) -> bool:
            self.threads.add(threading.get_ident())
            if self.send_ok:
                self.sent.append((name, data))
            return self.send_ok

        mod.connect, mod.disconnect, mod.add, mod.loop, mod.send = \
            connect, disconnect, add, loop, send
        return mod

    def call(self, obj: str, method: str, data: dict[str, Any] | None = None) -> Any:
        """Like `ubus call`: served by whoever runs loop(); the list of replies comes back."""
        answer: queue.Queue[Any] = queue.Queue()
        self.calls.put((obj, method, data or {}, answer))
        status, replies = answer.get(timeout=10)
        assert status == "ok", f"ubus call {obj} {method}: {status}"
        return replies


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        deadline.wait(0.01)
    raise AssertionError("condition not reached in time")


class Node:
    """A control server with canned commands and a bridge, on one event loop thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.sock = tmp_path / "acpd.sock"
        self.ubusd_sock = tmp_path / "ubus.sock"
        self.ubusd_sock.write_text("")
        config = AcpConfig(run_dir=tmp_path, log_dir=tmp_path, control_socket=self.sock)
        self.ctx = NodeContext(config=config, bus=EventBus(), control=ControlServer(self.sock))
        control = self.ctx.control
        control.register("status", lambda req: {"version": "0.1.0", "identity": None,
                                                "enrolled": False, "path": Path("/x")})
        control.register("neighbors", lambda req: [{"peer": "fe80::1", "interface": "eth0",
                                                    "ttl_s": None}])
        control.register("rescan", lambda req: {"interfaces": 2})

        def refuse(req: dict[str, Any]) -> None:
            raise RequestError("not enrolled")
        control.register("enroll", refuse)
        self.bridge = UbusBridge(self.ctx, socket_path=self.ubusd_sock, slice_ms=20,
                                 request_timeout=5.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def publish(self, event: object) -> None:
        self.loop.call_soon_threadsafe(self.ctx.bus.publish, event)

    def close(self) -> None:
        try:
            self.run(self.bridge.stop())
            self.run(self.ctx.control.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def ubusd(monkeypatch: pytest.MonkeyPatch) -> FakeUbusd:
    fake = FakeUbusd()
    monkeypatch.setitem(sys.modules, "ubus", fake.module())
    return fake


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.run(n.ctx.control.start())
    try:
        yield n
    finally:
        n.close()


def test_methods_forward_to_the_control_socket(ubusd: FakeUbusd, node: Node) -> None:
    node.run(node.bridge.start())
    wait_for(lambda: "acp" in ubusd.objects)
    assert set(ubusd.objects["acp"]) >= {"status", "interfaces", "neighbors", "channels", "rpl",
                                         "rescan", "enroll", "reload"}
    assert all(spec["signature"] == {} for spec in ubusd.objects["acp"].values())
    assert ubusd.call("acp", "status") == [{"version": "0.1.0", "enrolled": False,
                                            "path": "/x"}]
    assert ubusd.call("acp", "neighbors") == [{"neighbors": [{"peer": "fe80::1",
                                                              "interface": "eth0"}]}]
    assert ubusd.call("acp", "rescan") == [{"interfaces": 2}]
    assert ubusd.call("acp", "enroll") == [{"error": "not enrolled"}]
    assert ubusd.call("acp", "channels") == [{"error": "unknown command 'channels'"}]
    status = node.bridge.status()
    assert status["connected"] and status["calls"] == 5 and status["errors"] == 2
    # every python-ubus call came from the bridge's own thread, never the event loop's
    assert len(ubusd.threads) == 1
    assert ubusd.threads != {node.thread.ident, threading.get_ident()}


def test_events_are_sent_on_the_ubus_thread(ubusd: FakeUbusd, node: Node) -> None:
    node.run(node.bridge.start())
    wait_for(lambda: "acp" in ubusd.objects)
    node.publish(events.AdjacencyUp("fe80::2", "eth1", ("IKEv2",), 500))
    node.publish(events.ChannelUp("fe80::2", "eth1", "acp_1", "node2+fd00::2@acp.example"))
    node.publish(events.LinkAdopted("eth1", "eth1", 3, "fe80::9"))  # not announced
    wait_for(lambda: len(ubusd.sent) == 2)
    assert ubusd.sent[0] == ("acp.neighbor", {"action": "up", "peer": "fe80::2",
                                              "interface": "eth1", "methods": ["IKEv2"],
                                              "port": 500})
    assert ubusd.sent[1][0] == "acp.channel" and ubusd.sent[1][1]["interface"] == "acp_1"
    assert len(ubusd.threads) == 1


def test_reconnects_when_ubusd_restarts(ubusd: FakeUbusd, node: Node) -> None:
    node.run(node.bridge.start())
    wait_for(lambda: "acp" in ubusd.objects)
    # ubusd restarted: a new socket file (new inode) in place of the old one
    node.ubusd_sock.rename(node.ubusd_sock.with_suffix(".old"))
    node.ubusd_sock.write_text("")
    wait_for(lambda: ubusd.connects == 2 and "acp" in ubusd.objects)
    assert ubusd.call("acp", "rescan") == [{"interfaces": 2}]
    assert node.bridge.status()["registrations"] == 2


def test_failed_send_reconnects_and_keeps_the_event(ubusd: FakeUbusd, node: Node) -> None:
    node.run(node.bridge.start())
    wait_for(lambda: "acp" in ubusd.objects)
    ubusd.send_ok = False
    node.publish(events.AdjacencyDown("fe80::2", "eth1"))
    wait_for(lambda: ubusd.connects >= 2)
    ubusd.send_ok = True
    wait_for(lambda: ubusd.sent == [("acp.neighbor", {"action": "down", "peer": "fe80::2",
                                                      "interface": "eth1"})])


def test_stop_disconnects_and_joins(ubusd: FakeUbusd, node: Node) -> None:
    node.run(node.bridge.start())
    wait_for(lambda: ubusd.connected is not None)
    node.run(node.bridge.stop())
    assert ubusd.connected is None and not node.bridge.status()["connected"]
    assert not any(t.name == "ubus" for t in threading.enumerate())


def test_waits_for_ubusd_socket(ubusd: FakeUbusd, node: Node) -> None:
    node.ubusd_sock.unlink()
    node.run(node.bridge.start())
    wait_for(lambda: node.bridge.status()["reason"] is not None)
    assert "no ubusd socket" in node.bridge.status()["reason"] and ubusd.connects == 0
    node.ubusd_sock.write_text("")
    wait_for(lambda: "acp" in ubusd.objects, timeout=5)


def test_without_python_ubus_says_so_once(monkeypatch: pytest.MonkeyPatch, node: Node,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ubus", None)  # import ubus -> ImportError
    caplog.set_level(logging.INFO, logger="acpd.ubus")
    node.run(node.bridge.start())
    status = node.bridge.status()
    assert status["available"] is False and "python-ubus is not installed" in status["reason"]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "no ubus object 'acp'" in caplog.records[0].message
    assert not any(t.name == "ubus" for t in threading.enumerate())
    node.run(node.bridge.stop())  # a no-op, not an error


def test_to_reply_shapes() -> None:
    assert to_reply("neighbors", []) == {"neighbors": []}
    assert to_reply("status", {"a": None, "b": {"c": None, "d": (1, 2)}}) == {"b": {"d": [1, 2]}}
    assert to_reply("rescan", 3) == {"result": 3}
    assert to_reply("enroll", None) == {}
    assert to_reply("x", [None, {"p": Path("/y")}]) == {"x": [{"p": "/y"}]}


def test_event_messages() -> None:
    assert event_message(events.ChannelDown("fe80::3", "acp_2")) == (
        "acp.channel", {"action": "down", "peer": "fe80::3", "interface": "acp_2"})
    assert event_message(events.LinkReleased("eth0", "eth0")) is None

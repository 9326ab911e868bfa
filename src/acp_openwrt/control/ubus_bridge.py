"""The ubus object `acp`: acpd's control API seen through OpenWrt's bus (python-ubus).

python-ubus keeps one global connection per process, runs method callbacks on the thread that
calls `ubus.loop()`, is not thread-safe, and `loop(-1)` never returns once ubusd dies
(lab-notes §4). So every python-ubus call happens on one thread of its own: it serves in short
loop slices, sends the queued `acp.neighbor`/`acp.channel` events between slices, and
reconnects (registering the object again) when ubusd went away: its socket was replaced, or
`ubus.send` failed. Each method forwards to the control socket (control.client.request), so
ubus, acpctl and LuCI show the same answers. Without python-ubus (plain Linux) the bridge says
so once and stays idle.
"""
from __future__ import annotations

import asyncio
import collections
import importlib
import json
import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from .. import events
from ..node_context import NodeContext
from .client import ControlClientError, request as control_request

LOG = logging.getLogger("acpd.ubus")
OBJECT = "acp"
# ubus method -> control command. Arguments are never declared: python-ubus makes every
# declared argument mandatory, and none of these takes one.
METHODS: dict[str, str] = {
    "status": "status",
    "interfaces": "interfaces",
    "neighbors": "neighbors",
    "channels": "channels",
    "rpl": "rpl",
    "brski": "brski",
    "rescan": "rescan",
    "enroll": "enroll",
    "reload": "reload",
}
UBUS_SOCKETS = (Path("/var/run/ubus/ubus.sock"), Path("/var/run/ubus.sock"))
SLICE_MS = 250           # one ubus.loop() slice: the longest wait before a stop or an event
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
EVENT_BACKLOG = 256      # events kept while ubusd is away; older ones are dropped
Request = Callable[..., Any]


def _plain(value: Any) -> Any:
    """blobmsg has no null: drop None (keys and list items); everything else JSON-plain."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value if v is not None]
    return value


def to_reply(method: str, result: Any) -> dict[str, Any]:
    """A control-API answer as a ubus reply, which must be a table: lists go under the method's
    name (`{"neighbors": [...]}`), scalars under "result", nulls are left out."""
    result = json.loads(json.dumps(result, default=str))
    if isinstance(result, dict):
        return _plain(result)
    if isinstance(result, list):
        return {method: _plain(result)}
    return {} if result is None else {"result": result}


def event_message(event: object) -> tuple[str, dict[str, Any]] | None:
    """The ubus event for a bus event acpd's parts publish, or None if it is not announced."""
    if isinstance(event, events.AdjacencyUp):
        return "acp.neighbor", {"action": "up", "peer": event.peer,
                                "interface": event.dull_ifname,
                                "methods": list(event.methods), "port": event.port}
    if isinstance(event, events.AdjacencyDown):
        return "acp.neighbor", {"action": "down", "peer": event.peer,
                                "interface": event.dull_ifname}
    if isinstance(event, events.ChannelUp):
        return "acp.channel", {"action": "up", "peer": event.peer,
                               "interface": event.acp_ifname,
                               "dull_interface": event.dull_ifname,
                               "peer_node_name": event.peer_node_name}
    if isinstance(event, events.ChannelDown):
        return "acp.channel", {"action": "down", "peer": event.peer,
                               "interface": event.acp_ifname}
    return None


class UbusBridge:
    """acpd part: registers ubus object `acp` on its own thread; idle without python-ubus."""
    name = "ubus"

    def __init__(self, ctx: NodeContext, socket_path: Path | None = None,
                 request: Request = control_request, slice_ms: int = SLICE_MS,
                 request_timeout: float = 10.0, methods: dict[str, str] | None = None) -> None:
        self.ctx = ctx
        self.socket_path = socket_path
        self.slice_ms = slice_ms
        self.request_timeout = request_timeout
        self.methods = dict(METHODS if methods is None else methods)
        self._request = request
        self._ubus: ModuleType | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._events: collections.deque[tuple[str, dict[str, Any]]] = \
            collections.deque(maxlen=EVENT_BACKLOG)
        self._unsubscribe: list[Callable[[], None]] = []
        self._connected_to: tuple[int, int] | None = None  # (st_dev, st_ino) of ubusd's socket
        self.reason: str | None = None
        self.counters = {"registrations": 0, "calls": 0, "errors": 0, "events_sent": 0}

    # --- the event loop side ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self._ubus = importlib.import_module("ubus")
        except ImportError as exc:
            self.reason = f"python-ubus is not installed ({exc})"
            LOG.info("python-ubus is not installed: no ubus object '%s' (acpctl and the control "
                     "socket work as usual)", OBJECT)
            return
        for kind in (events.AdjacencyUp, events.AdjacencyDown,
                     events.ChannelUp, events.ChannelDown):
            self._unsubscribe.append(self.ctx.bus.subscribe(kind, self._on_event))
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="ubus", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        # a callback may be waiting on the control socket, which this loop serves: never block
        await asyncio.to_thread(thread.join, self.request_timeout + self.slice_ms / 1000 + 2)
        if thread.is_alive():
            LOG.warning("ubus thread did not stop in time (python-ubus stuck?)")

    def status(self) -> dict[str, Any]:
        return {"available": self._ubus is not None, "object": OBJECT,
                "connected": self._connected_to is not None,
                "socket": str(self.socket_path) if self.socket_path else None,
                "reason": self.reason, "methods": sorted(self.methods),
                "pending_events": len(self._events), **self.counters}

    def _on_event(self, event: object) -> None:
        message = event_message(event)
        if message is not None:
            self._events.append(message)  # deque.append is thread-safe

    # --- the ubus thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        delay = RETRY_MIN_S
        while not self._stopping.is_set():
            if self._connected_to is None:
                if not self._connect():
                    self._stopping.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_MIN_S
            try:
                self._ubus.loop(self.slice_ms)  # type: ignore[union-attr]
            except Exception as exc:
                self._lost(f"ubus loop failed: {exc}")
                continue
            self._send_events()
            if self._connected_to is not None and self._ubusd_identity() != self._connected_to:
                self._lost("ubusd restarted")
        self._disconnect()

    def _find_socket(self) -> Path | None:
        candidates = (self.socket_path,) if self.socket_path else UBUS_SOCKETS
        return next((p for p in candidates if p.exists()), None)

    def _ubusd_identity(self) -> tuple[int, int] | None:
        path = self._find_socket()
        try:
            st = os.stat(path) if path else None
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if st else None

    def _connect(self) -> bool:
        ubus = self._ubus
        assert ubus is not None
        path = self._find_socket()
        if path is None:
            reason = "no ubusd socket (" + ", ".join(
                str(p) for p in ((self.socket_path,) if self.socket_path else UBUS_SOCKETS)) + ")"
            if reason != self.reason:
                LOG.warning("ubus: %s; retrying", reason)
            self.reason = reason
            return False
        identity = self._ubusd_identity()
        try:
            ubus.connect(str(path))
            ubus.add(OBJECT, {method: {"method": self._handler(method, cmd), "signature": {}}
                              for method, cmd in self.methods.items()})
        except Exception as exc:
            reason = f"cannot register ubus object '{OBJECT}' at {path}: {exc}"
            if reason != self.reason:
                LOG.warning("%s; retrying", reason)
            self.reason = reason
            self._disconnect()
            return False
        self.socket_path = path
        self._connected_to = identity
        self.reason = None
        self.counters["registrations"] += 1
        LOG.info("ubus object '%s' registered at %s%s", OBJECT, path,
                 " again" if self.counters["registrations"] > 1 else "")
        return True

    def _disconnect(self) -> None:
        self._connected_to = None
        try:
            self._ubus.disconnect()  # type: ignore[union-attr]
        except Exception:
            pass  # python-ubus raises when there is no connection: nothing to undo then

    def _lost(self, why: str) -> None:
        LOG.warning("%s: reconnecting to ubus", why)
        self.reason = why
        self._disconnect()

    def _send_events(self) -> None:
        while self._events and self._connected_to is not None:
            name, data = self._events.popleft()
            try:
                sent = self._ubus.send(name, data)  # type: ignore[union-attr]
            except Exception:
                sent = False
            if sent is False:
                self._events.appendleft((name, data))
                self._lost(f"ubus.send({name}) failed")
                return
            self.counters["events_sent"] += 1

    def _handler(self, method: str, cmd: str) -> Callable[[Any, Any], None]:
        def handle(req: Any, _data: Any) -> None:
            self.counters["calls"] += 1
            try:
                reply = to_reply(method, self._request(self.ctx.config.control_socket, cmd,
                                                       timeout=self.request_timeout))
            except ControlClientError as exc:
                self.counters["errors"] += 1
                reply = {"error": str(exc)}
            except Exception as exc:  # nothing may escape into python-ubus's C callback
                self.counters["errors"] += 1
                LOG.exception("ubus %s.%s failed", OBJECT, method)
                reply = {"error": f"internal error: {exc}"}
            try:
                req.reply(reply)
            except Exception as exc:
                LOG.warning("ubus %s.%s: reply failed: %s", OBJECT, method, exc)
        return handle


__all__ = ["METHODS", "OBJECT", "UbusBridge", "event_message", "to_reply"]

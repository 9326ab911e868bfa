"""The ubus object `acp`: acpd's control API seen through OpenWrt's bus.

An asyncio client of ubusd (the wire protocol is ubus_protocol's, sans-I/O), in acpd's own
event loop: no thread, no python-ubus, and every wait on ubusd has a timeout, so a hung,
killed, absent or restarted ubusd can never stop acpd, `acpctl` or SIGTERM. The connection is
probed with ubus PINGs: `connected` is true only while ubusd answers them. When ubusd goes
away the bridge reconnects every RETRY_S and registers the object again, so `acp` is back
within a second of ubusd's return. Each method answers from the same control commands as
`acpctl` (ControlServer.call), so ubus, acpctl and LuCI show the same data.

Methods declare no arguments and ignore any they are given: uhttpd's `/ubus` (LuCI's rpc.js)
adds `ubus_rpc_session` to every call, and acpd's read methods take nothing. rpcd and uhttpd
check the caller's ACL before a call reaches us; ubusd only lets root (or an ubusd ACL) call.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import events
from ..logsafe import logsafe
from ..node_context import NodeContext, Part
from . import ubus_protocol as proto
from .ubus_protocol import Hello, Invoke, Malformed, RequestDone, UbusClientProtocol

if TYPE_CHECKING:  # the control API's types: 2 MB of TypedDicts acpd needs no instance of
    from .api import UbusCounters, UbusStatus

LOG = logging.getLogger("acpd.ubus")
OBJECT = "acp"
# ubus method -> control command; none takes an argument.
METHODS: dict[str, str] = {
    "status": "status",
    "interfaces": "interfaces",
    "neighbors": "neighbors",
    "channels": "channels",
    "rpl": "rpl",
    "map": "map",
    "brski": "brski",
    "rescan": "rescan",
    "enroll": "enroll",
    "reload": "reload",
}
UBUS_SOCKETS = (Path("/var/run/ubus/ubus.sock"), Path("/var/run/ubus.sock"))
RETRY_S = 0.5            # between connection attempts while ubusd is away
CONNECT_TIMEOUT_S = 2.0  # connect + HELLO + ADD_OBJECT: a stopped ubusd accepts, never answers
PING_INTERVAL_S = 1.5    # liveness probe while connected ...
PING_TIMEOUT_S = 2.0     # ... unanswered this long: ubusd is gone (or hung): reconnect
WRITE_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 10.0    # one method's answer (e.g. `reload` restarts parts)
MAX_CALLS = 16           # calls answered at once; more are refused with UNKNOWN_ERROR
EVENT_BACKLOG = 256      # events kept while ubusd is away; older ones are dropped
READ_CHUNK = 65536


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


class UbusLost(Exception):
    """The connection to ubusd ended or stopped answering (the reason is the message)."""


@contextlib.asynccontextmanager
async def answered_within(seconds: float) -> AsyncIterator[None]:
    """Bound a wait on ubusd: past `seconds` it is gone or hung (UbusLost)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise UbusLost(f"ubusd did not answer within {seconds:g} s") from None


class _Connection:
    """One live connection: the protocol core, the stream, and the requests awaiting answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.core = UbusClientProtocol()
        self.waiting: dict[int, asyncio.Future[RequestDone]] = {}
        self.hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
        except TimeoutError:
            raise UbusLost(f"ubusd took no data for {WRITE_TIMEOUT_S:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise UbusLost(f"ubusd connection: {exc}") from None

    async def request(self, seq: int, message: bytes) -> RequestDone:
        """Send one request and wait for its answer; the caller bounds the wait
        (`answered_within`)."""
        future: asyncio.Future[RequestDone] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = future
        try:
            await self.write(message)
            return await future
        finally:
            self.waiting.pop(seq, None)
            self.core.forget(seq)

    def fail_waiting(self, why: str) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(UbusLost(why))
        self.waiting.clear()

    def close(self) -> None:
        self.fail_waiting("connection closed")
        self.writer.close()


class UbusPart(Part):
    """acpd part: keeps ubus object `acp` registered at ubusd for as long as acpd runs."""
    name = "ubus"

    def __init__(self, ctx: NodeContext, socket_path: Path | None = None,
                 methods: dict[str, str] | None = None) -> None:
        self.ctx = ctx
        configured = socket_path or ctx.config.ubus_socket
        self.candidates: tuple[Path, ...] = (configured,) if configured else UBUS_SOCKETS
        self.methods = dict(METHODS if methods is None else methods)
        self.socket_path: Path | None = None
        self.object_id: int | None = None
        self.reason: str | None = "not connected yet"
        self.counters: UbusCounters = {
            "registrations": 0, "calls": 0, "errors": 0, "events_sent": 0, "events_dropped": 0,
            "calls_refused_busy": 0, "malformed": 0}
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._events: collections.deque[tuple[str, dict[str, Any]]] = \
            collections.deque(maxlen=EVENT_BACKLOG)
        self._event_ready = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []

    # --- part life -----------------------------------------------------------------------------

    async def start(self) -> None:
        for kind in (events.AdjacencyUp, events.AdjacencyDown,
                     events.ChannelUp, events.ChannelDown):
            self._unsubscribe.append(self.ctx.bus.subscribe(kind, self._on_event))
        self._task = asyncio.create_task(self._run(), name="ubus")

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        tasks = [t for t in (self._task, *self._calls) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drop("stopped")

    @property
    def connected(self) -> bool:
        return self.object_id is not None

    def status(self) -> UbusStatus:
        return {"object": OBJECT, "connected": self.connected,
                "socket": str(self.socket_path or self.candidates[0]),
                "reason": self.reason, "methods": sorted(self.methods),
                "pending_events": len(self._events), **self.counters}

    def _on_event(self, event: object) -> None:
        message = event_message(event)
        if message is None:
            return
        if len(self._events) == self._events.maxlen:
            self.counters["events_dropped"] += 1
        self._events.append(message)
        self._event_ready.set()

    # --- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except UbusLost as exc:
                self._drop(str(exc))
            except (ConnectionError, OSError) as exc:
                self._drop(f"ubusd connection: {exc.strerror or exc}")
            except proto.UbusProtocolError as exc:
                self._drop(f"ubusd sent garbage: {exc}")
            await asyncio.sleep(RETRY_S)

    def _drop(self, why: str) -> None:
        if self.connected and why != "stopped":
            LOG.warning("ubus: %s; object '%s' is gone until ubusd answers again", why, OBJECT)
        elif why != self.reason and why != "stopped":
            LOG.info("ubus: %s; retrying every %g s", why, RETRY_S)
        self.reason = why
        self.object_id = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _find_socket(self) -> Path | None:
        return next((p for p in self.candidates if p.exists()), None)

    async def _session(self) -> None:
        path = self._find_socket()
        if path is None:
            raise UbusLost("no ubusd socket (" + ", ".join(map(str, self.candidates)) + ")")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=READ_CHUNK), CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise UbusLost(f"{path}: ubusd does not accept connections") from None
        conn = self._conn = _Connection(reader, writer)
        self.socket_path = path
        reading = asyncio.create_task(self._read(conn), name="ubus-read")
        try:
            first: set[asyncio.Future[Any]] = {conn.hello, reading}
            await asyncio.wait(first, timeout=CONNECT_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                raise reading.exception() or UbusLost("ubusd closed the connection")
            if not conn.hello.done():
                raise UbusLost(f"{path}: ubusd sent no hello within {CONNECT_TIMEOUT_S:g} s "
                               "(hung?)")
            seq, message = conn.core.add_object(OBJECT, {m: {} for m in self.methods})
            async with answered_within(CONNECT_TIMEOUT_S):
                done = await conn.request(seq, message)
            object_id = next((d.get(proto.ATTR_OBJID) for d in done.data
                              if proto.ATTR_OBJID in d), None)
            if done.status != proto.STATUS_OK or object_id is None:
                raise UbusLost(f"ubusd refused object '{OBJECT}' (status {done.status})")
            self.object_id, self.reason = object_id, None
            self.counters["registrations"] += 1
            LOG.info("ubus object '%s' registered at %s%s", OBJECT, path,
                     " again" if self.counters["registrations"] > 1 else "")
            await self._serve(conn, reading)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    async def _serve(self, conn: _Connection, reading: asyncio.Task[None]) -> None:
        """Connected: send events as they come and probe ubusd; return or raise when lost."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + PING_INTERVAL_S
        while True:
            while self._events:
                name, data = self._events[0]
                seq, message = conn.core.send_event(name, data)
                async with answered_within(PING_TIMEOUT_S):
                    await conn.request(seq, message)
                self._events.popleft()
                self.counters["events_sent"] += 1
            if loop.time() >= next_ping:
                seq, message = conn.core.ping()
                async with answered_within(PING_TIMEOUT_S):
                    await conn.request(seq, message)
                next_ping = loop.time() + PING_INTERVAL_S
            self._event_ready.clear()
            waiter = asyncio.ensure_future(self._event_ready.wait())
            finished, _ = await asyncio.wait({waiter, reading},
                                             timeout=max(0.0, next_ping - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if reading in finished:
                exc = reading.exception()
                raise exc if exc else UbusLost("ubusd closed the connection")

    async def _read(self, conn: _Connection) -> None:
        try:
            while True:
                data = await conn.reader.read(READ_CHUNK)
                if not data:
                    raise UbusLost("ubusd closed the connection")
                self._dispatch(conn, conn.core.receive(data))
        finally:
            conn.fail_waiting("ubusd connection ended")

    def _dispatch(self, conn: _Connection, received: list[proto.UbusEvent]) -> None:
        for event in received:
            if isinstance(event, Hello):
                if not conn.hello.done():
                    conn.hello.set_result(event)
            elif isinstance(event, RequestDone):
                future = conn.waiting.get(event.seq)
                if future is not None and not future.done():
                    future.set_result(event)
            elif isinstance(event, Invoke):
                self._start_call(conn, event)
            elif isinstance(event, Malformed):
                self.counters["malformed"] += 1
                if self.counters["malformed"] <= 10 or self.counters["malformed"] % 1000 == 0:
                    LOG.warning("ubus: dropped a malformed message (%d so far): %s",
                                self.counters["malformed"], logsafe(event.reason))

    # --- calls ---------------------------------------------------------------------------------

    def _start_call(self, conn: _Connection, call: Invoke) -> None:
        if len(self._calls) >= MAX_CALLS:
            self.counters["calls_refused_busy"] += 1
            conn.writer.write(conn.core.reply(call, None, proto.STATUS_UNKNOWN_ERROR))
            return
        task = asyncio.create_task(self._answer(conn, call), name=f"ubus-{call.method}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, conn: _Connection, call: Invoke) -> None:
        self.counters["calls"] += 1
        status, reply = proto.STATUS_OK, None
        if call.object_id != self.object_id:
            status = proto.STATUS_NOT_FOUND
        elif call.method not in self.methods:
            status = proto.STATUS_METHOD_NOT_FOUND
        else:
            reply = await self._call_control(call.method)
        if call.no_reply:
            return
        try:
            message = conn.core.reply(call, reply, status)
        except ValueError as exc:  # BlobError: a value blobmsg cannot carry
            self.counters["errors"] += 1
            message = conn.core.reply(call, {"error": f"internal error: {exc}"})
        try:
            await conn.write(message)
        except UbusLost as exc:
            LOG.info("ubus %s.%s: answer not delivered (%s)", OBJECT, logsafe(call.method), exc)

    async def _call_control(self, method: str) -> dict[str, Any]:
        """The control command's answer as a reply table; a refusal as {"error": one line}."""
        try:
            answer = await asyncio.wait_for(self.ctx.control.call(self.methods[method]),
                                            CALL_TIMEOUT_S)
        except TimeoutError:
            answer = {"ok": False, "error": f"acpd did not answer within {CALL_TIMEOUT_S:g} s"}
        if not answer.get("ok"):
            self.counters["errors"] += 1
            return {"error": str(answer.get("error", "request refused"))}
        try:
            return to_reply(method, answer.get("result"))
        except (TypeError, ValueError) as exc:
            self.counters["errors"] += 1
            LOG.exception("ubus %s.%s: answer not representable", OBJECT, method)
            return {"error": f"internal error: {exc}"}


__all__ = ["METHODS", "OBJECT", "UbusPart", "event_message", "to_reply"]

"""One GRASP instance for one network namespace: engine + sockets + timer (+ the local API).

    svc = GraspService(namespace="acp-dull", mode="dull")    # None: the current namespace
    await svc.start()
    await svc.add_interface("eth0")          # once eth0 has its link-local address
    asa = svc.register_asa("acpd")
    svc.flood(asa, 210000, [(Objective("AN_ACP", F_SYNCH, 1, "IKEv2"), locator)], ifname="eth0")
    unsubscribe = svc.on_flood("AN_ACP", callback)    # callback(FloodReceived)
    svc.remove_interface("eth0")
    await svc.stop()

Mode "dull" floods only (RFC 8994 §6.4: link-local, loop count 1, no TCP listener); mode "acp"
is full GRASP with a TCP 7017 listener and ``address`` (the ACP address) as our initiator and
default locator. The RFC 8991 calls come from ``AsaApi``; ``api_path`` also serves them on a
Unix socket for ASAs in other processes (api_server.py, client.py).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from ..core import CoreTimer
from . import constants as c
from .actions import CloseStream, FloodReceived, OpenStream, Output, SendMulticast, SendStream
from .asa_api import AsaApi
from .engine import Engine, EngineConfig
from .messages import is_link_local
from .transport import (
    MulticastSocket,
    SocketFactory,
    StreamConnection,
    in_namespace,
    interface_facts,
    open_listener,
    open_multicast,
    open_peer_socket,
)

_log = logging.getLogger(__name__)
HOUSEKEEPING = 1.0     # s between engine timer runs when nothing is due sooner (the ceiling)
CONNECT_TIMEOUT = 5.0
MAX_STREAMS = 256
_SRC_CACHE_MAX = 4096
MAX_PEER_SOCKETS = 32  # per interface (watch_peer): file descriptors are finite
ACCEPT_RETRY_DELAY = 1.0  # s the listener rests after accept() failed (out of descriptors)


def _open_interface(ifname: str, port: int, timeout: float) -> tuple[int, bytes, socket.socket]:
    index, link_local = interface_facts(ifname, timeout)
    return index, link_local, open_multicast(ifname, index, port)


class GraspService(AsaApi):
    name = "grasp"

    def __init__(self, namespace: str | None = None, mode: str = "acp", address: str | None = None,
                 port: int = c.GRASP_LISTEN_PORT, api_path: str | None = None,
                 api_mode: int = 0o660, config: EngineConfig | None = None,
                 link_local_timeout: float = 5.0) -> None:
        if mode not in ("dull", "acp"):
            raise ValueError(f"GRASP mode must be 'dull' or 'acp', not {mode!r}")
        self.namespace = namespace
        self.mode = mode
        self.port = port
        self.api_path = api_path
        self.api_mode = api_mode
        self.link_local_timeout = link_local_timeout
        cfg = config or EngineConfig()
        cfg.dull = mode == "dull"
        cfg.port = port
        if address is not None:
            cfg.address = ipaddress.IPv6Address(address).packed
        self.engine = Engine(cfg)
        self.transport_counters: dict[str, int] = {}
        self._udp: dict[str, MulticastSocket] = {}
        self._peer_udp: dict[tuple[str, str], MulticastSocket] = {}  # (ifname, peer) -> socket
        self._link_local: dict[str, bytes] = {}
        self._ifindex: dict[str, int] = {}
        self._ifname_of: dict[int, str] = {}
        self._conns: dict[int, StreamConnection] = {}
        self._src_cache: dict[str, bytes] = {}
        self._factory = SocketFactory(namespace)
        self._listener: socket.socket | None = None
        self._api: Any = None
        self._timer: CoreTimer[Output] | None = None  # while started
        self._executing = False
        self._backlog: list[Output] = []  # what callbacks caused while outputs were executed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connects: set[asyncio.Task[None]] = set()
        self._api_init()

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            if self.mode == "acp":
                listener = await self._loop.run_in_executor(None, in_namespace, self.namespace,
                                                            open_listener, self.port)
                self._listener = listener
                self._loop.add_reader(listener.fileno(), self._accept)
                await self._factory.prime()
            if self.api_path is not None:
                from .api_server import ApiServer
                self._api = ApiServer(self, self.api_path, mode=self.api_mode)
                await self._api.start()
        except BaseException:
            await self.stop()
            raise
        self._timer = CoreTimer(self.engine, self._execute, loop=self._loop,
                                ceiling=HOUSEKEEPING, name="grasp")
        self._timer.rearm()

    async def stop(self) -> None:
        """Close every socket and connection; pending API calls fail with noSession."""
        if self._api is not None:
            await self._api.stop()
            self._api = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        for ifname in list(self._udp):
            self.remove_interface(ifname)
        if self._listener is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for task in list(self._connects):
            task.cancel()
        for conn in list(self._conns.values()):
            conn.abort()
        self._conns.clear()
        self._factory.close()
        self._cancel_waiters()

    # -- interfaces ---------------------------------------------------------------------------
    async def add_interface(self, ifname: str) -> None:
        """Join ff02::13 on ``ifname`` (waits up to link_local_timeout for its link-local)."""
        if ifname in self._udp:
            return
        loop = asyncio.get_running_loop()
        index, link_local, sock = await loop.run_in_executor(
            None, in_namespace, self.namespace, _open_interface, ifname, c.GRASP_LISTEN_PORT,
            self.link_local_timeout)
        if ifname in self._udp:  # added twice concurrently
            sock.close()
            return
        self._udp[ifname] = MulticastSocket(ifname, index, sock, self._on_datagrams,
                                            self.transport_counters,
                                            self.engine.config.udp_max_size)
        self._link_local[ifname] = link_local
        self._ifindex[ifname] = index
        self._ifname_of[index] = ifname
        self.engine.add_interface(ifname, link_local)

    async def watch_peer(self, ifname: str, peer: str) -> bool:
        """Give a known neighbour (link-local ``peer`` on ``ifname``) a receive queue of its own
        (transport.open_peer_socket). False if refused: no such interface, or
        MAX_PEER_SOCKETS there already."""
        key = (ifname, peer)
        index = self._ifindex.get(ifname)
        if key in self._peer_udp:
            return True
        if index is None or sum(k[0] == ifname for k in self._peer_udp) >= MAX_PEER_SOCKETS:
            return False
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, in_namespace, self.namespace, open_peer_socket,
                                          ifname, index, peer, self.port)
        if key in self._peer_udp or self._ifindex.get(ifname) != index:  # raced
            sock.close()
            return key in self._peer_udp
        self._peer_udp[key] = MulticastSocket(ifname, index, sock, self._on_datagrams,
                                              self.transport_counters,
                                              self.engine.config.udp_max_size)
        return True

    def unwatch_peer(self, ifname: str, peer: str) -> None:
        udp = self._peer_udp.pop((ifname, peer), None)
        if udp is not None:
            udp.close()

    def remove_interface(self, ifname: str) -> None:
        for key in [k for k in self._peer_udp if k[0] == ifname]:
            self._peer_udp.pop(key).close()
        udp = self._udp.pop(ifname, None)
        if udp is not None:
            udp.close()
        self.engine.remove_interface(ifname)
        self._link_local.pop(ifname, None)
        index = self._ifindex.pop(ifname, None)
        if index is not None:
            self._ifname_of.pop(index, None)

    @property
    def interfaces(self) -> dict[str, str]:
        """ifname -> our link-local address on it."""
        return {n: str(ipaddress.IPv6Address(a)) for n, a in self._link_local.items()}

    # -- the engine's clock, outputs and timer ------------------------------------------------
    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _execute(self, outputs: Sequence[Output]) -> None:
        """Carry out what the engine returned, in order. A callback that calls into the engine
        while this runs (an on_flood subscriber flooding, a refused negotiation) gets its
        outputs appended to the backlog, which the outermost call works off after the
        current list, so every output runs once and in the order it was caused."""
        if self._executing:
            self._backlog.extend(outputs)
            return
        self._executing = True
        try:
            # Items are Any here: the dispatch is one type() and identity tests (an isinstance
            # that misses costs several times more, and most tests here miss), which mypy
            # cannot narrow from. Each branch is the one class the engine hands out.
            batch: Sequence[Any] = outputs
            if self._backlog:  # left by an execution that raised
                batch, self._backlog = [*self._backlog, *outputs], []
            while True:
                for item in batch:
                    kind = type(item)
                    if kind is FloodReceived:  # most of what a flood causes: first
                        self._flood_heard(item)
                    elif kind is SendMulticast:
                        udp = self._udp.get(item.ifname)
                        if udp is not None:
                            udp.send(item.data)
                    elif kind is SendStream:
                        conn = self._conns.get(item.conn_id)
                        if conn is not None:
                            conn.write(item.data)
                    elif kind is CloseStream:
                        conn = self._conns.get(item.conn_id)
                        if conn is not None:
                            conn.close()
                    elif kind is OpenStream:
                        self._open_stream(item)
                    else:
                        self._dispatch(item)
                if not self._backlog:
                    return
                batch, self._backlog = self._backlog, []
        finally:
            self._executing = False

    def _feed(self, outputs: Sequence[Output]) -> None:
        """What an API call returned: execute it and re-arm the timer at the engine's
        next_timer() (the call may have set a deadline: a discovery, a session)."""
        if outputs:
            self._execute(outputs)
        if self._timer is not None:
            self._timer.rearm()

    # -- datagrams ----------------------------------------------------------------------------
    def _on_datagrams(self, ifname: str, batch: list[tuple[bytes, Any]]) -> None:
        now = self._now()
        receive = self.engine.receive_datagram
        cache = self._src_cache
        outputs: list[Output] = []
        for data, addr in batch:
            host = addr[0]
            src = cache.get(host)
            if src is None:
                try:
                    src = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                except OSError:
                    continue
                if len(cache) >= _SRC_CACHE_MAX:
                    cache.clear()
                cache[host] = src
            out = receive(ifname, src, data, now, addr[1])
            if out:
                outputs += out
        if outputs:  # one execution per batch; see _stream_data for why no re-arm
            self._execute(outputs)

    # -- streams ------------------------------------------------------------------------------
    def _new_conn(self) -> StreamConnection:
        assert self._loop is not None
        return StreamConnection(self._loop, self._stream_data, self._stream_closed,
                                self.transport_counters)

    def _accept(self) -> None:
        """The listener is readable: take one connection (no task, no transport: it is read at
        once, its request usually being there already). One per wake-up: more waiting keep
        the listener readable, and the usual single one costs no accept that fails."""
        listener = self._listener
        if listener is None:
            return
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of descriptors, or the like: pause, as asyncio does
            counters = self.transport_counters
            counters["accept_error"] = counters.get("accept_error", 0) + 1
            _log.debug("grasp accept failed: %s", exc)
            loop = asyncio.get_running_loop()
            loop.remove_reader(listener.fileno())
            loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accept, listener)
            return
        self._stream_accepted(sock, peer)

    def _resume_accept(self, listener: socket.socket) -> None:
        if self._listener is listener and self._loop is not None:
            self._loop.add_reader(listener.fileno(), self._accept)

    def _stream_accepted(self, sock: socket.socket, peer: Any) -> None:
        try:
            if len(self._conns) >= MAX_STREAMS:
                counters = self.transport_counters
                counters["stream_refused"] = counters.get("stream_refused", 0) + 1
                raise OSError("too many streams")
            src = socket.inet_pton(socket.AF_INET6, peer[0].partition("%")[0])
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            return
        ifname = self._ifname_of.get(peer[3]) if is_link_local(src) else None
        conn = self._new_conn()
        conn.peer = peer
        conn.conn_id, outputs = self.engine.stream_accepted(src, ifname, self._now())
        self._conns[conn.conn_id] = conn
        if outputs:
            self._execute(outputs)
        conn.attach(sock, read_now=True, read_later=True)

    def _open_stream(self, action: OpenStream) -> None:
        conn = self._new_conn()
        conn.conn_id = action.conn_id
        self._conns[action.conn_id] = conn
        try:
            address = self._sockaddr(action)
        except OSError as exc:
            self._connect_failed(conn, None, exc)
            return
        sock = self._factory.take()
        if sock is not None:  # the usual case: no task, no loop turn before the SYN
            self._start_connect(conn, sock, address)
            return
        task = asyncio.get_running_loop().create_task(self._connect(conn, address))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    def _sockaddr(self, action: OpenStream) -> tuple[str, int, int, int]:
        if len(action.address) != 16:
            raise OSError("only IPv6 locators are reachable")
        scope = 0
        if is_link_local(action.address):
            scope = self._ifindex.get(action.ifname or "", 0)
            if not scope:
                raise OSError(f"link-local peer without a known interface ({action.ifname})")
        return socket.inet_ntop(socket.AF_INET6, action.address), action.port, 0, scope

    async def _connect(self, conn: StreamConnection, address: tuple[str, int, int, int]) -> None:
        try:
            sock = await self._factory.tcp()
        except OSError as exc:
            self._connect_failed(conn, None, exc)
            return
        self._start_connect(conn, sock, address)

    def _start_connect(self, conn: StreamConnection, sock: socket.socket,
                       address: tuple[str, int, int, int]) -> None:
        # Start the handshake and hand the socket to the connection at once: what is written
        # meanwhile waits in its buffer until the socket becomes writable, and a refused or
        # unreachable peer shows up as the connection's loss. The engine's session timeout
        # bounds a handshake that never ends.
        try:
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
        except OSError as exc:
            self._connect_failed(conn, sock, exc)
            return
        conn.attach(sock, read_later=True)

    def _connect_failed(self, conn: StreamConnection, sock: socket.socket | None,
                        exc: OSError) -> None:
        if sock is not None:
            sock.close()
        counters = self.transport_counters
        counters["connect_failed"] = counters.get("connect_failed", 0) + 1
        _log.debug("grasp connect %d failed: %s", conn.conn_id, exc)
        conn.finished()

    # Deadlines that received messages set (session timeouts, a peer's M_WAIT) are met by the
    # housekeeping tick (the CoreTimer's ceiling, HOUSEKEEPING); only API calls re-arm the
    # timer, so a message costs no walk of the engine's timers (next_timer()).
    def _stream_data(self, conn: StreamConnection, data: bytes) -> None:
        outputs = self.engine.receive_stream_data(conn.conn_id, data, self._now())
        if outputs:
            self._execute(outputs)

    def _stream_closed(self, conn: StreamConnection) -> None:
        if self._conns.get(conn.conn_id) is conn:
            del self._conns[conn.conn_id]
            outputs = self.engine.stream_closed(conn.conn_id, self._now())
            if outputs:
                self._execute(outputs)

    # -- what operators see -------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        """Engine drops/accepts by reason, transport errors, and datagrams per interface."""
        return {
            "engine": dict(self.engine.counters),
            "transport": dict(self.transport_counters),
            "interfaces": {n: {"received": u.received, "sent": u.sent}
                           for n, u in self._udp.items()},
        }

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "namespace": self.namespace,
            "address": str(ipaddress.IPv6Address(self.engine.config.address)),
            "interfaces": self.interfaces,
            "asas": sorted(a.name for a in self._asas.values()),
            "flood_cache": len(self.engine.flood_cache),
            "caches": self.engine.cache_sizes(),
            "streams": len(self._conns),
            "peer_sockets": len(self._peer_udp),
            "api": self.api_path,
            "counters": self.counters(),
        }

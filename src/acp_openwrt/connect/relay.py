"""IPv4 relays: an ACP address and port in, the IPv4 device's address and port out.

All sockets, listening and outgoing, are made inside the ACP namespace (the service passes a
factory that creates them there), so a relay can never listen outside the ACP. A listening
socket is bound to the relay address only (IPV6_V6ONLY), not to `::`.

Bounds: at most `max_connections` TCP connections (or UDP sessions) per relay, more are refused
(TCP: accepted and closed at once; UDP: dropped) and counted; a TCP connection or UDP session
with no traffic in either direction for `idle_timeout` seconds is closed; a TCP connect to the
device that takes longer than CONNECT_TIMEOUT fails the client's connection.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

LOG = logging.getLogger("acpd.connect.relay")
SocketFactory = Callable[[int, int], Awaitable[socket.socket]]  # (family, type) -> socket
CONNECT_TIMEOUT = 10.0
CHUNK = 65536
UDP_BACKLOG = 8  # datagrams held per new UDP session while its socket is being made


async def listening_socket(make: SocketFactory, address: ipaddress.IPv6Address, port: int,
                           kind: int) -> socket.socket:
    sock = await make(socket.AF_INET6, kind)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(address), port))
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Conn:
    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


class TcpRelay:
    """[relay address]:port -> device:port over TCP."""

    def __init__(self, make: SocketFactory, listen: tuple[ipaddress.IPv6Address, int],
                 target: tuple[ipaddress.IPv4Address, int], max_connections: int,
                 idle_timeout: float) -> None:
        self.make = make
        self.listen = listen
        self.target = target
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.counters: Counter[str] = Counter()
        self.active = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.socket: socket.socket | None = None

    async def start(self) -> None:
        self.socket = await listening_socket(self.make, *self.listen, socket.SOCK_STREAM)
        self._server = await asyncio.start_server(self._client, sock=self.socket)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self.active >= self.max_connections:
            self.counters["refused"] += 1
            writer.close()
            return
        self._tasks.add(task)
        self.active += 1
        self.counters["accepted"] += 1
        out_writer: asyncio.StreamWriter | None = None
        try:
            sock = await self.make(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                    sock, (str(self.target[0]), self.target[1])), CONNECT_TIMEOUT)
            except BaseException:
                sock.close()
                raise
            out_reader, out_writer = await asyncio.open_connection(sock=sock)
            conn = _Conn()
            pumps = {asyncio.ensure_future(self._pump(reader, out_writer, conn)),
                     asyncio.ensure_future(self._pump(out_reader, writer, conn))}
            watchdog = asyncio.ensure_future(self._watch(conn))
            try:
                await self._until_done(pumps, watchdog)
            finally:
                for t in (*pumps, watchdog):
                    t.cancel()
                await asyncio.gather(*pumps, watchdog, return_exceptions=True)
        except (TimeoutError, OSError) as exc:
            self.counters["device_errors"] += 1
            LOG.info("relay %s -> %s:%d: %s", self.listen[1], *self.target, exc)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback logs a cancelled task)
        finally:
            self.active -= 1
            self._tasks.discard(task)
            for w in (writer, out_writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _until_done(pumps: set[asyncio.Task[bool]], watchdog: asyncio.Task[None]) -> None:
        """Both directions finished (half-closes allowed), one failed, or idle too long."""
        running = set(pumps)
        while running:
            done, _ = await asyncio.wait(running | {watchdog},
                                         return_when=asyncio.FIRST_COMPLETED)
            if watchdog in done:
                return
            for task in done:
                running.discard(task)
                if task.exception() is not None or not task.result():
                    return

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    conn: _Conn) -> bool:
        """Copy until EOF; True if the EOF was passed on (the other direction may go on)."""
        while True:
            data = await reader.read(CHUNK)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                    return True
                return False
            conn.touch()
            writer.write(data)
            await writer.drain()

    async def _watch(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            left = conn.last + self.idle_timeout - loop.time()
            if left <= 0:
                self.counters["idle_closed"] += 1
                return
            await asyncio.sleep(left)

    def status(self) -> dict[str, Any]:
        return {"protocol": "tcp", "listen": f"[{self.listen[0]}]:{self.listen[1]}",
                "target": f"{self.target[0]}:{self.target[1]}", "active": self.active,
                "max_connections": self.max_connections, "idle_timeout": self.idle_timeout,
                "counters": dict(self.counters)}


class _Session(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, client: tuple[Any, ...]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last = asyncio.get_running_loop().time()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.last = asyncio.get_running_loop().time()
        self.relay.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        self.relay.counters["device_errors"] += 1


class UdpRelay(asyncio.DatagramProtocol):
    """[relay address]:port -> device:port over UDP: one device-side socket per client."""

    def __init__(self, make: SocketFactory, listen: tuple[ipaddress.IPv6Address, int],
                 target: tuple[ipaddress.IPv4Address, int], max_connections: int,
                 idle_timeout: float) -> None:
        self.make = make
        self.listen = listen
        self.target = target
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.counters: Counter[str] = Counter()
        self.sessions: dict[tuple[Any, ...], _Session] = {}
        self.socket: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def active(self) -> int:
        return len(self.sessions)

    async def start(self) -> None:
        self.socket = await listening_socket(self.make, *self.listen, socket.SOCK_DGRAM)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=self.socket)
        self._spawn(self._expire())

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in self.sessions.values():
            if session.transport is not None:
                session.transport.close()
        self.sessions.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        key = addr[:2]
        session = self.sessions.get(key)
        if session is None:
            if len(self.sessions) >= self.max_connections:
                self.counters["refused"] += 1
                return
            session = self.sessions[key] = _Session(self, addr)
            self.counters["accepted"] += 1
            self._spawn(self._open(session, key))
        session.last = asyncio.get_running_loop().time()
        if session.transport is None:
            if len(session.pending) < UDP_BACKLOG:
                session.pending.append(data)
            else:
                self.counters["dropped"] += 1
        else:
            session.transport.sendto(data)

    async def _open(self, session: _Session, key: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await self.make(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((str(self.target[0]), self.target[1]))
            transport, _ = await loop.create_datagram_endpoint(lambda: session, sock=sock)
        except OSError as exc:
            self.counters["device_errors"] += 1
            LOG.info("relay udp %d -> %s:%d: %s", self.listen[1], *self.target, exc)
            self.sessions.pop(key, None)
            return
        if self.sessions.get(key) is not session:  # expired or stopped meanwhile
            transport.close()
            return
        for data in session.pending:
            transport.sendto(data)
        session.pending.clear()

    def reply(self, data: bytes, client: tuple[Any, ...]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, client)

    async def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.idle_timeout / 4, 5.0))
            now = loop.time()
            for key, session in list(self.sessions.items()):
                if now - session.last >= self.idle_timeout:
                    del self.sessions[key]
                    self.counters["idle_closed"] += 1
                    if session.transport is not None:
                        session.transport.close()

    def status(self) -> dict[str, Any]:
        return {"protocol": "udp", "listen": f"[{self.listen[0]}]:{self.listen[1]}",
                "target": f"{self.target[0]}:{self.target[1]}", "active": self.active,
                "max_connections": self.max_connections, "idle_timeout": self.idle_timeout,
                "counters": dict(self.counters)}

"""The circuit relay: pledge TCP in on DULL listeners, registrar TCP out in the ACP, bytes copied.

It never looks at what it copies (the pledge's TLS goes end to end to the registrar). Bounds,
because anyone on a DULL link can connect: a global and a per-pledge-address connection count
(`Admission`, sans-I/O), an idle timeout (no byte either way), a connect timeout. A refused
pledge gets a TCP reset at once, so it can try another proxy without waiting.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .registrars import RegistrarLocator

LOG = logging.getLogger("acp-join-proxy.relay")
CHUNK = 16 * 1024


@dataclass(frozen=True)
class RelayLimits:
    """UCI: join_proxy_max_connections, _max_per_pledge, _idle_timeout (s), _connect_timeout (s)."""
    max_connections: int = 32
    max_per_pledge: int = 4
    idle_timeout: float = 60.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_pledge < 1:
            raise ValueError("connection limits must be at least 1")
        if self.idle_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")


class Admission:
    """Who may open one more circuit now: a reason to refuse, or None (and it is counted)."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._per_pledge: Counter[str] = Counter()

    @property
    def active(self) -> int:
        return sum(self._per_pledge.values())

    def admit(self, pledge: str) -> str | None:
        if self.active >= self.limits.max_connections:
            return "limit"
        if self._per_pledge[pledge] >= self.limits.max_per_pledge:
            return "per_pledge_limit"
        self._per_pledge[pledge] += 1
        return None

    def release(self, pledge: str) -> None:
        self._per_pledge[pledge] -= 1
        if self._per_pledge[pledge] <= 0:
            del self._per_pledge[pledge]


@dataclass
class Circuit:
    """One relayed connection; counters are bytes pledge->registrar (up) and back (down)."""
    cid: int
    ifname: str
    pledge: str
    registrar: RegistrarLocator | None = None
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    up: int = 0
    down: int = 0
    task: asyncio.Task[None] | None = None
    idle_closed: bool = False

    def status(self, now: float) -> dict[str, Any]:
        return {"id": self.cid, "ifname": self.ifname, "pledge": self.pledge,
                "registrar": self.registrar.to_dict() if self.registrar else None,
                "bytes_up": self.up, "bytes_down": self.down,
                "age": round(now - self.started, 1), "idle": round(now - self.last_activity, 1)}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): a refused pledge learns it at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def _pledge_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]).split("%")[0] if peer else "?"


class Relay:
    """Listeners by interface and the circuits they carry, on the running loop."""

    def __init__(self, limits: RelayLimits,
                 registrars: Callable[[], list[RegistrarLocator]]) -> None:
        self.limits = limits
        self._registrars = registrars
        self._admission = Admission(limits)
        self._servers: dict[str, tuple[asyncio.AbstractServer, dict[str, Any]]] = {}
        self._circuits: dict[int, Circuit] = {}
        self._ids = itertools.count(1)
        self.totals: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None

    async def add_listener(self, ifname: str, sock: socket.socket) -> tuple[str, int]:
        """Serve a listening socket (replacing the interface's old one); returns address, port."""
        await self.remove_listener(ifname)
        sock.setblocking(False)
        info: dict[str, Any] = {"ifname": ifname, "accepted": 0, "refused": 0}
        server = await asyncio.start_server(
            lambda r, w: self._accept(info, r, w), sock=sock, limit=CHUNK)
        address, port = sock.getsockname()[:2]
        info.update(address=str(address).split("%")[0], port=port)
        self._servers[ifname] = (server, info)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())
        return info["address"], port

    async def remove_listener(self, ifname: str) -> None:
        """Stop accepting on an interface; its open circuits end too (the link is gone)."""
        entry = self._servers.pop(ifname, None)
        if entry is None:
            return
        entry[0].close()
        for circuit in [c for c in self._circuits.values() if c.ifname == ifname]:
            if circuit.task is not None:
                circuit.task.cancel()

    def listeners(self) -> list[dict[str, Any]]:
        return [dict(info) for _, info in self._servers.values()]

    async def close(self) -> None:
        for ifname in list(self._servers):
            await self.remove_listener(ifname)
        tasks = [c.task for c in self._circuits.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    def _refuse(self, info: dict[str, Any], writer: asyncio.StreamWriter, reason: str,
                pledge: str) -> None:
        info["refused"] += 1
        self.totals[f"refused_{reason}"] += 1
        LOG.info("refused pledge %s on %s: %s", pledge, info["ifname"], reason.replace("_", " "))
        _reset(writer)

    async def _accept(self, info: dict[str, Any], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        pledge = _pledge_address(writer)
        registrars = self._registrars()
        if not registrars:
            self._refuse(info, writer, "no_registrar", pledge)
            return
        reason = self._admission.admit(pledge)
        if reason is not None:
            self._refuse(info, writer, reason, pledge)
            return
        circuit = Circuit(next(self._ids), info["ifname"], pledge)
        circuit.task = asyncio.current_task()
        self._circuits[circuit.cid] = circuit
        info["accepted"] += 1
        self.totals["accepted"] += 1
        try:
            await self._run(circuit, reader, writer, registrars)
        except asyncio.CancelledError:
            if circuit.idle_closed:
                LOG.info("circuit %d from %s closed after %gs idle", circuit.cid, pledge,
                         self.limits.idle_timeout)
            _reset(writer)
        finally:
            self._circuits.pop(circuit.cid, None)
            self._admission.release(pledge)
            self.totals["bytes_up"] += circuit.up
            self.totals["bytes_down"] += circuit.down
            writer.close()

    async def _connect(self, circuit: Circuit, registrars: list[RegistrarLocator]
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for registrar in registrars:
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_connection(registrar.address, registrar.port, limit=CHUNK),
                    self.limits.connect_timeout)
            except (TimeoutError, OSError) as exc:
                LOG.warning("registrar [%s]:%d unreachable: %s", registrar.address, registrar.port,
                            getattr(exc, "strerror", None) or exc.__class__.__name__)
                continue
            circuit.registrar = registrar
            return conn
        return None

    async def _run(self, circuit: Circuit, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter, registrars: list[RegistrarLocator]) -> None:
        conn = await self._connect(circuit, registrars)
        if conn is None:
            self.totals["refused_registrar_unreachable"] += 1
            _reset(writer)
            return
        up_reader, up_writer = conn
        LOG.info("circuit %d: %s on %s -> [%s]:%d", circuit.cid, circuit.pledge, circuit.ifname,
                 circuit.registrar.address, circuit.registrar.port)  # type: ignore[union-attr]
        pumps = [asyncio.create_task(self._pump(circuit, reader, up_writer, "up")),
                 asyncio.create_task(self._pump(circuit, up_reader, writer, "down"))]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done):  # a reset on one side ends the other at once
                _reset(up_writer)
                _reset(writer)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            up_writer.close()

    async def _pump(self, circuit: Circuit, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, direction: str) -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            circuit.last_activity = time.monotonic()
            setattr(circuit, direction, getattr(circuit, direction) + len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():  # half-close: the other direction may still be talking
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def _sweep(self) -> None:
        period = min(1.0, self.limits.idle_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for circuit in list(self._circuits.values()):
                if now - circuit.last_activity > self.limits.idle_timeout and circuit.task:
                    circuit.idle_closed = True
                    self.totals["idle_closed"] += 1
                    circuit.task.cancel()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"limits": {"max_connections": self.limits.max_connections,
                           "max_per_pledge": self.limits.max_per_pledge,
                           "idle_timeout": self.limits.idle_timeout,
                           "connect_timeout": self.limits.connect_timeout},
                "listeners": self.listeners(),
                "connections": [c.status(now) for c in self._circuits.values()],
                "totals": self.counters()}

    def counters(self) -> dict[str, int]:
        """Totals so far, the bytes of circuits still open included."""
        totals = Counter(self.totals)
        for circuit in self._circuits.values():
            totals["bytes_up"] += circuit.up
            totals["bytes_down"] += circuit.down
        return dict(totals)

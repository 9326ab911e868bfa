"""The circuit relay: pledge TCP in on DULL listeners, registrar TCP out in the ACP, bytes copied.

It never looks at what it copies (the pledge's TLS goes end to end to the registrar). Bounds,
because anyone on a DULL link can connect: a global and a per-pledge-address connection count,
an idle timeout (no byte either way), a connect timeout, and backpressure (a side that does
not read stops the other side being read: at most CHUNK bytes wait per direction). A refused
pledge gets a TCP reset at once, so it can try another proxy without waiting.

Two layers: `CircuitBook` decides (admission, counters, idle deadlines; sans-I/O, time passed
in) and `Relay` does the socket work on a runtime.Loop (non-blocking sockets, poll, timers).
"""
from __future__ import annotations

import _socket
import errno
import sys
import time

from .registrars import RegistrarLocator
from .runtime import ERR, IN, OUT, Log, Loop, Timer

TYPE_CHECKING = False  # typing itself is no lightweight import
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CHUNK = 16 * 1024        # read at once; at most this much waits in the proxy per direction
READ_BATCH = 8           # chunks passed on per wake-up while both sides keep up
ACCEPT_BATCH = 16        # connections taken per listener wake-up
ACCEPT_PAUSE = 1.0       # out of descriptors: the listener rests this long
_LINGER_RST = (1).to_bytes(4, sys.byteorder) + bytes(4)  # struct linger {1, 0}: close = RST
_RESET_ERRORS = (ConnectionError, TimeoutError)


class RelayLimits:
    """UCI: join_proxy_max_connections, _max_per_pledge, _idle_timeout (s), _connect_timeout (s)."""
    __slots__ = ("max_connections", "max_per_pledge", "idle_timeout", "connect_timeout")
    max_connections: int
    max_per_pledge: int
    idle_timeout: float
    connect_timeout: float

    def __init__(self, max_connections: int = 32, max_per_pledge: int = 4,
                 idle_timeout: float = 60.0, connect_timeout: float = 5.0) -> None:
        if max_connections < 1 or max_per_pledge < 1:
            raise ValueError("connection limits must be at least 1")
        if idle_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        for name, value in (("max_connections", max_connections),
                            ("max_per_pledge", max_per_pledge), ("idle_timeout", idle_timeout),
                            ("connect_timeout", connect_timeout)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RelayLimits is immutable ({name})")

    def _values(self) -> tuple[int, int, float, float]:
        return (self.max_connections, self.max_per_pledge, self.idle_timeout,
                self.connect_timeout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelayLimits) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"RelayLimits({inner})"

    def to_dict(self) -> dict[str, Any]:
        return {"max_connections": self.max_connections, "max_per_pledge": self.max_per_pledge,
                "idle_timeout": self.idle_timeout, "connect_timeout": self.connect_timeout}


class Admission:
    """Who may open one more circuit now: a reason to refuse, or None (and it is counted)."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._per_pledge: dict[str, int] = {}
        self.active = 0

    def admit(self, pledge: str) -> str | None:
        if self.active >= self.limits.max_connections:
            return "limit"
        count = self._per_pledge.get(pledge, 0)
        if count >= self.limits.max_per_pledge:
            return "per_pledge_limit"
        self._per_pledge[pledge] = count + 1
        self.active += 1
        return None

    def release(self, pledge: str) -> None:
        count = self._per_pledge.get(pledge, 0) - 1
        if count < 0:
            return
        self.active -= 1
        if count == 0:
            del self._per_pledge[pledge]
        else:
            self._per_pledge[pledge] = count


class Circuit:
    """One relayed connection; counters are bytes pledge->registrar (up) and back (down).

    The socket fields are the I/O layer's (Relay); the book only reads the rest.
    """
    __slots__ = ("cid", "ifname", "pledge", "registrar", "started", "last_activity", "up",
                 "down", "idle_closed", "psock", "rsock", "candidates", "connect_timer",
                 "up_buf", "down_buf", "up_eof", "down_eof", "closed")

    def __init__(self, cid: int, ifname: str, pledge: str, now: float) -> None:
        self.cid = cid
        self.ifname = ifname
        self.pledge = pledge
        self.registrar: RegistrarLocator | None = None
        self.started = self.last_activity = now
        self.up = self.down = 0
        self.idle_closed = False
        self.psock: _socket.socket | None = None     # pledge side (DULL)
        self.rsock: _socket.socket | None = None     # registrar side (ACP)
        self.candidates: list[RegistrarLocator] = []
        self.connect_timer: Timer | None = None
        self.up_buf = self.down_buf = b""            # read, not yet written on
        self.up_eof = self.down_eof = False          # that side sent FIN (passed on once empty)
        self.closed = False

    def status(self, now: float) -> dict[str, Any]:
        return {"id": self.cid, "ifname": self.ifname, "pledge": self.pledge,
                "registrar": self.registrar.to_dict() if self.registrar else None,
                "bytes_up": self.up, "bytes_down": self.down,
                "age": round(now - self.started, 1), "idle": round(now - self.last_activity, 1)}


class CircuitBook:
    """The relay's decisions and bookkeeping, without sockets or clocks (sans-I/O)."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self.admission = Admission(limits)
        self.circuits: dict[int, Circuit] = {}
        self.totals: dict[str, int] = {}
        self._next_id = 1

    def count(self, name: str, n: int = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + n

    def open(self, ifname: str, pledge: str, have_registrar: bool, now: float
             ) -> Circuit | str:
        """A pledge connected: its circuit, or why it is refused (counted either way)."""
        reason = "no_registrar" if not have_registrar else self.admission.admit(pledge)
        if reason is not None:
            self.count(f"refused_{reason}")
            return reason
        circuit = Circuit(self._next_id, ifname, pledge, now)
        self._next_id += 1
        self.circuits[circuit.cid] = circuit
        self.count("accepted")
        return circuit

    def moved(self, circuit: Circuit, up: int, down: int, now: float) -> None:
        circuit.up += up
        circuit.down += down
        circuit.last_activity = now

    def close(self, circuit: Circuit) -> None:
        if self.circuits.pop(circuit.cid, None) is None:
            return
        self.admission.release(circuit.pledge)
        self.count("bytes_up", circuit.up)
        self.count("bytes_down", circuit.down)

    def next_idle_deadline(self) -> float | None:
        if not self.circuits:
            return None
        return min(c.last_activity for c in self.circuits.values()) + self.limits.idle_timeout

    def idle(self, now: float) -> list[Circuit]:
        """Circuits without a byte either way for idle_timeout: marked and counted, to close."""
        found = [c for c in self.circuits.values()
                 if now - c.last_activity >= self.limits.idle_timeout]
        for circuit in found:
            circuit.idle_closed = True
            self.count("idle_closed")
        return found

    def counters(self) -> dict[str, int]:
        """Totals so far, the bytes of circuits still open included."""
        totals = dict(self.totals)
        for circuit in self.circuits.values():
            totals["bytes_up"] = totals.get("bytes_up", 0) + circuit.up
            totals["bytes_down"] = totals.get("bytes_down", 0) + circuit.down
        return totals


def _reset(sock: _socket.socket | None) -> None:
    """Close with RST (SO_LINGER 0): a refused pledge learns it at once."""
    if sock is None:
        return
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()


class Relay:
    """Listeners by interface and the circuits they carry, on a runtime.Loop."""

    def __init__(self, loop: Loop, limits: RelayLimits,
                 registrars: Callable[[], list[RegistrarLocator]], *,
                 failed: Callable[[RegistrarLocator], None] | None = None,
                 answered: Callable[[RegistrarLocator], None] | None = None) -> None:
        self.loop = loop
        self.limits = limits
        self._registrars = registrars
        self._failed, self._answered = failed, answered  # the registrar table hears of both
        self.book = CircuitBook(limits)
        self._listeners: dict[str, tuple[_socket.socket, dict[str, Any]]] = {}
        self._idle_timer: Timer | None = None
        self._scratch = bytearray(CHUNK)  # every read lands here first: no bytes per read
        self._view = memoryview(self._scratch)

    # -- listeners ------------------------------------------------------------------------
    def add_listener(self, ifname: str, sock: _socket.socket) -> tuple[str, int]:
        """Serve a listening socket (replacing the interface's old one); returns address, port."""
        self.remove_listener(ifname)
        sock.setblocking(False)
        address, port = sock.getsockname()[:2]
        info: dict[str, Any] = {"ifname": ifname, "accepted": 0, "refused": 0,
                                "address": str(address).split("%")[0], "port": port}
        self._listeners[ifname] = (sock, info)
        self.loop.watch(sock.fileno(), lambda _mask: self._accept(sock, info), IN)
        return info["address"], port

    def remove_listener(self, ifname: str) -> None:
        """Stop accepting on an interface; its open circuits end too (the link is gone)."""
        entry = self._listeners.pop(ifname, None)
        if entry is None:
            return
        self.loop.forget(entry[0].fileno())
        entry[0].close()
        for circuit in [c for c in self.book.circuits.values() if c.ifname == ifname]:
            self._end(circuit, reset=True)

    def listeners(self) -> list[dict[str, Any]]:
        return [dict(info) for _, info in self._listeners.values()]

    def close(self) -> None:
        for ifname in list(self._listeners):
            self.remove_listener(ifname)
        for circuit in list(self.book.circuits.values()):
            self._end(circuit, reset=True)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _accept(self, lsock: _socket.socket, info: dict[str, Any]) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = lsock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    Log.warning("accept on %s: %s; pausing %gs", info["ifname"], exc.strerror,
                                ACCEPT_PAUSE)
                    self._pause(lsock, info)
                return  # ECONNABORTED and the like: that pledge is gone already
            sock = _socket.socket(lsock.family, _socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)
            self._admit(sock, str(peer[0]).split("%")[0], info)

    def _pause(self, lsock: _socket.socket, info: dict[str, Any]) -> None:
        fileno = lsock.fileno()
        self.loop.want(fileno, 0)
        self.loop.call_later(ACCEPT_PAUSE, lambda: self._resume(info, fileno))

    def _resume(self, info: dict[str, Any], fileno: int) -> None:
        entry = self._listeners.get(info["ifname"])
        if entry is not None and entry[0].fileno() == fileno:
            self.loop.want(fileno, IN)

    def _admit(self, sock: _socket.socket, pledge: str, info: dict[str, Any]) -> None:
        candidates = self._registrars()
        got = self.book.open(info["ifname"], pledge, bool(candidates), time.monotonic())
        if isinstance(got, str):
            info["refused"] += 1
            Log.info("refused pledge %s on %s: %s", pledge, info["ifname"], got.replace("_", " "))
            _reset(sock)
            return
        info["accepted"] += 1
        circuit = got
        circuit.psock = sock
        circuit.candidates = list(candidates)
        self.loop.watch(sock.fileno(), lambda mask: self._ready(circuit, mask, True), 0)
        self._arm_idle()
        self._connect_next(circuit)

    # -- the registrar side ---------------------------------------------------------------
    def _connect_next(self, circuit: Circuit) -> None:
        """Dial the next candidate registrar; none left: the pledge is reset."""
        while circuit.candidates:
            registrar = circuit.candidates.pop(0)
            sock = None
            try:
                sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex((registrar.address, registrar.port))
            except OSError as exc:  # out of descriptors, or the like
                err = exc.errno or errno.EIO
            if sock is not None and err in (0, errno.EINPROGRESS):
                circuit.rsock = sock
                circuit.registrar = registrar
                self.loop.watch(sock.fileno(), lambda mask: self._connected(circuit), OUT)
                circuit.connect_timer = self.loop.call_later(
                    self.limits.connect_timeout, lambda: self._connect_failed(circuit, "timeout"))
                return
            if sock is not None:
                sock.close()
            self._unreachable(registrar, errno.errorcode.get(err, str(err)))
        self.book.count("refused_registrar_unreachable")
        self._end(circuit, reset=True)

    def _unreachable(self, registrar: RegistrarLocator, why: str) -> None:
        Log.warning("registrar [%s]:%d unreachable: %s", registrar.address, registrar.port, why)
        if self._failed is not None:
            self._failed(registrar)

    def _connected(self, circuit: Circuit) -> None:
        sock = circuit.rsock
        if sock is None or circuit.closed:
            return
        err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            self._connect_failed(circuit, errno.errorcode.get(err, str(err)))
            return
        if circuit.connect_timer is not None:
            circuit.connect_timer.cancel()
            circuit.connect_timer = None
        self.loop.watch(sock.fileno(), lambda mask: self._ready(circuit, mask, False), 0)
        registrar = circuit.registrar
        assert registrar is not None
        if self._answered is not None:
            self._answered(registrar)
        Log.info("circuit %d: %s on %s -> [%s]:%d", circuit.cid, circuit.pledge, circuit.ifname,
                 registrar.address, registrar.port)
        self._update(circuit)

    def _connect_failed(self, circuit: Circuit, why: str) -> None:
        if circuit.connect_timer is not None:
            circuit.connect_timer.cancel()
            circuit.connect_timer = None
        if circuit.rsock is not None:
            self.loop.forget(circuit.rsock.fileno())
            circuit.rsock.close()
            circuit.rsock = None
        if circuit.registrar is not None:
            self._unreachable(circuit.registrar, why)
            circuit.registrar = None
        self._connect_next(circuit)

    # -- copying --------------------------------------------------------------------------
    def _update(self, circuit: Circuit) -> None:
        """What each socket waits for: read while its direction has nothing queued and no
        FIN yet (backpressure), write while the other direction has something queued."""
        if circuit.closed:
            return
        psock, rsock = circuit.psock, circuit.rsock
        assert psock is not None and rsock is not None
        if circuit.up_eof and circuit.down_eof and not circuit.up_buf and not circuit.down_buf:
            self._end(circuit, reset=False)
            return
        pmask = (IN if not circuit.up_eof and not circuit.up_buf else 0) | \
            (OUT if circuit.down_buf else 0)
        rmask = (IN if not circuit.down_eof and not circuit.down_buf else 0) | \
            (OUT if circuit.up_buf else 0)
        self.loop.want(psock.fileno(), pmask)
        self.loop.want(rsock.fileno(), rmask)

    def _ready(self, circuit: Circuit, mask: int, pledge_side: bool) -> None:
        if circuit.closed or circuit.rsock is None or circuit.psock is None:
            return
        up = pledge_side  # reading this socket feeds the upward direction
        try:
            if mask & (IN | ERR) and not (circuit.up_eof if up else circuit.down_eof) and \
                    not (circuit.up_buf if up else circuit.down_buf):
                for _ in range(READ_BATCH):  # while it all goes straight through: no poll
                    if not self._read(circuit, up):
                        break
            if mask & (OUT | ERR) and (circuit.down_buf if up else circuit.up_buf):
                self._flush(circuit, not up)
        except _RESET_ERRORS:  # a reset on one side resets the other at once
            self._end(circuit, reset=True)
            return
        except OSError as exc:
            Log.info("circuit %d: %s", circuit.cid, exc.strerror or exc)
            self._end(circuit, reset=True)
            return
        self._update(circuit)

    def _read(self, circuit: Circuit, up: bool) -> bool:
        """Read a chunk into the relay's one scratch buffer and write it on; what the other
        side does not take now is kept (at most a chunk). True when a whole chunk went
        straight through (the source may have more, the destination takes it)."""
        src, dst = (circuit.psock, circuit.rsock) if up else (circuit.rsock, circuit.psock)
        assert src is not None and dst is not None
        try:
            n = src.recv_into(self._scratch)
        except (BlockingIOError, InterruptedError):
            return False
        if n == 0:
            if up:
                circuit.up_eof = True
            else:
                circuit.down_eof = True
            self._flush(circuit, up)  # nothing waits: the FIN goes on at once
            return False
        self.book.moved(circuit, n if up else 0, 0 if up else n, time.monotonic())
        try:
            sent = dst.send(self._view[:n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < n:
            rest = bytes(self._view[sent:n])
            if up:
                circuit.up_buf = rest
            else:
                circuit.down_buf = rest
            return False
        return n == CHUNK

    def _flush(self, circuit: Circuit, up: bool) -> None:
        """Write what waits in one direction; pass a FIN on once it is all out (half-close)."""
        dst = circuit.rsock if up else circuit.psock
        buf = circuit.up_buf if up else circuit.down_buf
        assert dst is not None
        if buf:
            try:
                sent = dst.send(buf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            buf = buf[sent:]
            if sent:
                circuit.last_activity = time.monotonic()
            if up:
                circuit.up_buf = buf
            else:
                circuit.down_buf = buf
        if not buf and (circuit.up_eof if up else circuit.down_eof):
            try:
                dst.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def _end(self, circuit: Circuit, reset: bool) -> None:
        """Close both sides (the pledge's with RST when reset) and forget the circuit."""
        if circuit.closed:
            return
        circuit.closed = True
        if circuit.connect_timer is not None:
            circuit.connect_timer.cancel()
        # an idle circuit: RST to the pledge (it learns at once), FIN to the registrar
        rsock_rst = reset and not circuit.idle_closed
        for sock, rst in ((circuit.psock, reset), (circuit.rsock, rsock_rst)):
            if sock is not None:
                self.loop.forget(sock.fileno())
                if rst:
                    _reset(sock)
                else:
                    sock.close()
        circuit.psock = circuit.rsock = None
        self.book.close(circuit)

    # -- idle circuits ----------------------------------------------------------------------
    def _arm_idle(self) -> None:
        deadline = self.book.next_idle_deadline()
        if self._idle_timer is not None:
            if deadline is not None and self._idle_timer.when <= deadline:
                return  # fires earlier anyway and re-arms then
            self._idle_timer.cancel()
            self._idle_timer = None
        if deadline is not None:
            self._idle_timer = self.loop.call_at(deadline, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self._idle_timer = None
        for circuit in self.book.idle(time.monotonic()):
            Log.info("circuit %d from %s closed after %gs idle", circuit.cid, circuit.pledge,
                     self.limits.idle_timeout)
            self._end(circuit, reset=True)
        self._arm_idle()

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"limits": self.limits.to_dict(), "listeners": self.listeners(),
                "connections": [c.status(now) for c in self.book.circuits.values()],
                "totals": self.counters()}

    def counters(self) -> dict[str, int]:
        return self.book.counters()

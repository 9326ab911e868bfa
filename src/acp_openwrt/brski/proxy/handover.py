"""The little protocol between acpd and its join-proxy process (one module, both sides use it).

Why a protocol at all: the proxy faces unauthenticated pledges, so it runs unprivileged in the
ACP namespace and cannot open sockets in DULL. acpd opens them and hands them over; the proxy
tells acpd when it knows a registrar, so that acpd (which owns DULL GRASP) floods AN_Proxy.

Transport: an AF_UNIX SOCK_SEQPACKET socketpair made by acpd, one end inherited by the proxy.
Each datagram is one JSON object (UTF-8, at most MAX_MESSAGE bytes) with an "op" field; a
listening socket travels as SCM_RIGHTS ancillary data of its "listen" message. SEQPACKET keeps
message boundaries, so a descriptor can never arrive attached to the wrong message.

acpd -> proxy   listen{ifname,address,port}+1 fd, unlisten{ifname},
                registrar{address,port,ttl_ms[,local]} (ttl_ms 0: forget it), status{seq},
                reprobe{} (the ACP's routes changed: probe a registrar that did not answer now)
proxy -> acpd   hello{pid,uid,gid}, listening{ifname,address,port}, listen_failed{ifname,reason},
                registrar_state{known,address,port}, status_reply{seq,status}
"""
from __future__ import annotations

import _socket
import errno
import os
import sys

from .registrars import ipv6_normal

TYPE_CHECKING = False  # typing itself is no lightweight import
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import Any, ClassVar

MAX_MESSAGE = 64 * 1024
MAX_FDS = 4
IFNAME_MAX = 15
_FD_SIZE = 4  # a C int; packed by hand: the array module imports collections
_CMSG_SPACE = _socket.CMSG_SPACE(MAX_FDS * _FD_SIZE)


class HandoverError(ValueError):
    """A message that breaks the protocol (one line; the peer is buggy or hostile)."""


# -- JSON from the C accelerator alone ------------------------------------------------------
# json.decoder and json.encoder import re (about 1 MB of RSS in the join proxy process); the
# _json C module's scanner and encoder are what they use for the work anyway. Fallback: json.

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)
    memo: ClassVar[dict[str, str]] = {}


try:
    import _json
    _scan = _json.make_scanner(_ScanContext)  # type: ignore[arg-type]
    _encode = _json.make_encoder({}, str, _json.encode_basestring_ascii, None, ":", ",",
                                 False, False, False)

    def json_loads(text: str) -> Any:
        start = len(text) - len(text.lstrip(" \t\n\r"))
        try:
            obj, end = _scan(text, start)
        except (StopIteration, ImportError):  # ImportError: C's error path wants json.decoder
            raise ValueError("not JSON") from None
        if text[end:].strip(" \t\n\r"):
            raise ValueError("extra data after JSON")
        return obj

    def json_dumps(obj: Any) -> str:
        return "".join(_encode(obj, 0))
except (ImportError, AttributeError, TypeError):  # another interpreter: the json module
    import json

    def json_loads(text: str) -> Any:
        return json.loads(text)

    def json_dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)


# -- messages -------------------------------------------------------------------------------
# Plain slotted classes, not dataclasses: dataclasses imports inspect (about 3 MB of RSS).

class _Message:
    """Fields in `_fields`; those in `_optional` may be None. Immutable, compared by value."""
    __slots__ = ()
    op: ClassVar[str] = ""
    _fields: ClassVar[tuple[str, ...]] = ()
    _optional: ClassVar[tuple[str, ...]] = ()

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable ({name})")

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._fields}
        out["op"] = self.op
        return out

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _Message) and type(other) is type(self)
                and self.values() == other.values())

    def __hash__(self) -> int:
        return hash((self.op, *self.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"


class Listen(_Message):
    """Take this listening TCP socket (the one fd of the message) for a DULL interface."""
    __slots__ = ("ifname", "address", "port")
    op = "listen"
    _fields = __slots__
    ifname: str
    address: str
    port: int

    def __init__(self, ifname: str, address: str, port: int) -> None:
        self._set(ifname=ifname, address=address, port=port)


class Unlisten(_Message):
    __slots__ = ("ifname",)
    op = "unlisten"
    _fields = __slots__
    ifname: str

    def __init__(self, ifname: str) -> None:
        self._set(ifname=ifname)


class Registrar(_Message):
    """An AN_join_registrar flood was heard: locator and its ttl (0 withdraws it); `local`:
    the registrar runs on this node (preferred)."""
    __slots__ = ("address", "port", "ttl_ms", "local")
    op = "registrar"
    _fields = __slots__
    _optional = ("local",)
    address: str
    port: int
    ttl_ms: int
    local: bool

    def __init__(self, address: str, port: int, ttl_ms: int, local: bool = False) -> None:
        self._set(address=address, port=port, ttl_ms=ttl_ms, local=local)


class StatusRequest(_Message):
    __slots__ = ("seq",)
    op = "status"
    _fields = __slots__
    seq: int

    def __init__(self, seq: int) -> None:
        self._set(seq=seq)


class Reprobe(_Message):
    """acpd's RPL installed routes or had its DAO acknowledged: a registrar that has not
    answered the probe yet may answer now, so probe it at once rather than at the next retry."""
    __slots__ = ()
    op = "reprobe"
    _fields = ()

    def __init__(self) -> None:
        pass


class Hello(_Message):
    __slots__ = ("pid", "uid", "gid")
    op = "hello"
    _fields = __slots__
    pid: int
    uid: int
    gid: int

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self._set(pid=pid, uid=uid, gid=gid)


class Listening(_Message):
    __slots__ = ("ifname", "address", "port")
    op = "listening"
    _fields = __slots__
    ifname: str
    address: str
    port: int

    def __init__(self, ifname: str, address: str, port: int) -> None:
        self._set(ifname=ifname, address=address, port=port)


class ListenFailed(_Message):
    __slots__ = ("ifname", "reason")
    op = "listen_failed"
    _fields = __slots__
    ifname: str
    reason: str

    def __init__(self, ifname: str, reason: str) -> None:
        self._set(ifname=ifname, reason=reason)


class RegistrarState(_Message):
    """Whether the proxy can relay now, and to whom (address/port None when not known)."""
    __slots__ = ("known", "address", "port")
    op = "registrar_state"
    _fields = __slots__
    _optional = ("address", "port")
    known: bool
    address: str | None
    port: int | None

    def __init__(self, known: bool, address: str | None = None, port: int | None = None) -> None:
        self._set(known=known, address=address, port=port)


class StatusReply(_Message):
    __slots__ = ("seq", "status")
    op = "status_reply"
    _fields = __slots__
    seq: int
    status: dict[str, Any]

    def __init__(self, seq: int, status: dict[str, Any]) -> None:
        self._set(seq=seq, status=status)


Message = (Listen | Unlisten | Registrar | StatusRequest | Reprobe | Hello | Listening
           | ListenFailed | RegistrarState | StatusReply)
_MESSAGE_TYPES: tuple[type[Message], ...] = (
    Listen, Unlisten, Registrar, StatusRequest, Reprobe, Hello, Listening, ListenFailed,
    RegistrarState, StatusReply)
_TYPES: dict[str, type[Message]] = {t.op: t for t in _MESSAGE_TYPES}
_FDS_WANTED = {"listen": 1}


def _check_ifname(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= IFNAME_MAX or "/" in value:
        raise HandoverError(f"bad interface name {value!r}")
    return value


def _check_address(value: Any) -> str:
    if not isinstance(value, str):
        raise HandoverError(f"address {value!r} is not a string")
    try:
        return ipv6_normal(value)
    except ValueError:
        raise HandoverError(f"address {value!r} is not an IPv6 address") from None


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise HandoverError(f"{name} {value!r} is not an integer in {low}..{high}")
    return value


_CHECKS = {
    "ifname": _check_ifname,
    "address": _check_address,
    "port": lambda v: _check_int(v, "port", 0, 65535),
    "ttl_ms": lambda v: _check_int(v, "ttl_ms", 0, 2**32 - 1),
    "seq": lambda v: _check_int(v, "seq", 0, 2**53),
    "pid": lambda v: _check_int(v, "pid", 1, 2**22),
    "uid": lambda v: _check_int(v, "uid", 0, 2**32 - 1),
    "gid": lambda v: _check_int(v, "gid", 0, 2**32 - 1),
}


def _check_field(op: str, name: str, value: Any) -> Any:
    if op == "registrar_state" and name in ("address", "port") and value is None:
        return None
    if name in _CHECKS:
        return _CHECKS[name](value)
    if name in ("known", "local"):
        if not isinstance(value, bool):
            raise HandoverError(f"{name} {value!r} is not true/false")
        return value
    if name == "reason":
        if not isinstance(value, str):
            raise HandoverError(f"reason {value!r} is not a string")
        return value[:200]
    if name == "status":
        if not isinstance(value, dict):
            raise HandoverError("status is not an object")
        return value
    raise HandoverError(f"{op}: unexpected field {name!r}")


def encode(msg: Message) -> bytes:
    data = json_dumps(msg.to_dict()).encode()
    if len(data) > MAX_MESSAGE:
        raise HandoverError(f"{msg.op} message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes, fd_count: int = 0) -> Message:
    """One datagram (and how many descriptors came with it) -> a checked message."""
    try:
        obj = json_loads(data.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HandoverError("message is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise HandoverError('message is not an object with a string "op"')
    op = obj.pop("op")
    kind = _TYPES.get(op)
    if kind is None:
        raise HandoverError(f"unknown op {op!r}")
    if fd_count != _FDS_WANTED.get(op, 0):
        raise HandoverError(f"{op} came with {fd_count} descriptors, "
                            f"wants {_FDS_WANTED.get(op, 0)}")
    missing = [name for name in kind._fields if name not in kind._optional and name not in obj]
    if missing:
        raise HandoverError(f"{op}: missing {', '.join(missing)}")
    extra = sorted(set(obj) - set(kind._fields))
    if extra:
        raise HandoverError(f"{op}: unexpected field {extra[0]!r}")
    return kind(**{name: _check_field(op, name, value) for name, value in obj.items()})


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _parse(data: bytes, fds: list[int], flags: int) -> Message:
    """Check a received datagram; on any error close the descriptors that came with it."""
    try:
        if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            raise HandoverError("message or its descriptors were truncated")
        return decode(data, len(fds))
    except HandoverError:
        close_all(fds)
        raise


def send_message(sock: _socket.socket, msg: Message, fds: tuple[int, ...] = ()) -> None:
    """Send one message (a blocking socket, or one with room: they are small)."""
    send_datagram(sock, encode(msg), fds)


def send_datagram(sock: _socket.socket, data: bytes, fds: tuple[int, ...] = ()) -> None:
    """One datagram with `fds` as SCM_RIGHTS (also the registrar worker's transport)."""
    if fds:
        packed = b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder, signed=True) for fd in fds)
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])
    else:
        sock.send(data)


def recv_message(sock: _socket.socket) -> tuple[Message, list[int]] | None:
    """Receive one message; None at end of stream. The caller owns the returned descriptors
    (received close-on-exec)."""
    received = recv_datagram(sock)
    if received is None:
        return None
    data, fds, flags = received
    return _parse(data, fds, flags), fds


def recv_datagram(sock: _socket.socket) -> tuple[bytes, list[int], int] | None:
    """One datagram, its descriptors and recvmsg's flags; None at end of stream."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, _CMSG_SPACE,
                                           getattr(_socket, "MSG_CMSG_CLOEXEC", 0))
    fds: list[int] = []
    for level, kind, cdata in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(cdata[i:i + _FD_SIZE], sys.byteorder, signed=True)
                    for i in range(0, len(cdata) - _FD_SIZE + 1, _FD_SIZE)]
    if not data and not fds:
        return None
    return data, fds, flags


class HandoverChannel:
    """One end of the socketpair, on the running asyncio loop (acpd's side; the proxy process
    has its own loop and no asyncio: process.py)."""

    def __init__(self, sock: _socket.socket, *,
                 send: Callable[[_socket.socket, Any, tuple[int, ...]], None] = send_message,
                 recv: Callable[[_socket.socket], tuple[Any, list[int]] | None] = recv_message,
                 ) -> None:
        """`send`/`recv`: this module's messages by default; the registrar worker's link
        (registrar/worker_protocol.py) passes its own over the same datagrams."""
        import asyncio  # here, not at the top: the proxy process must not load it
        sock.setblocking(False)
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._send, self._recv = send, recv
        self._pending: set[asyncio.Task[None]] = set()  # send_soon's, while blocked

    async def _wait(self, writable: bool) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        fd = self.sock.fileno()
        add, remove = ((self._loop.add_writer, self._loop.remove_writer) if writable
                       else (self._loop.add_reader, self._loop.remove_reader))

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)
        add(fd, ready)
        try:
            await fut
        finally:
            remove(fd)

    async def send(self, msg: Any, fds: tuple[int, ...] = ()) -> None:
        while True:
            try:
                self._send(self.sock, msg, fds)
                return
            except BlockingIOError:
                await self._wait(writable=True)

    def send_soon(self, msg: Any) -> None:
        """Send now if the socket takes it (the caller's next step then comes after it), else
        from a task once it is writable. A broken link is left for `receive` to find."""
        try:
            self._send(self.sock, msg, ())
        except BlockingIOError:
            task = self._loop.create_task(self.send(msg))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        except OSError:
            pass

    async def receive(self) -> tuple[Any, list[int]] | None:
        """Next message and its descriptors; None when the peer closed (or the socket broke)."""
        while True:
            try:
                return self._recv(self.sock)
            except BlockingIOError:
                await self._wait(writable=False)
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                    return None
                raise

    def close(self) -> None:
        self.sock.close()

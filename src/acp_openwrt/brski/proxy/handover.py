"""The little protocol between acpd and its join-proxy process (one module, both sides use it).

Why a protocol at all: the proxy faces unauthenticated pledges, so it runs unprivileged in the
ACP namespace and cannot open sockets in DULL. acpd opens them and hands them over; the proxy
tells acpd when it knows a registrar, so that acpd (which owns DULL GRASP) floods AN_Proxy.

Transport: an AF_UNIX SOCK_SEQPACKET socketpair made by acpd, one end inherited by the proxy.
Each datagram is one JSON object (UTF-8, at most MAX_MESSAGE bytes) with an "op" field; a
listening socket travels as SCM_RIGHTS ancillary data of its "listen" message. SEQPACKET keeps
message boundaries, so a descriptor can never arrive attached to the wrong message.

acpd -> proxy   listen{ifname,address,port}+1 fd, unlisten{ifname},
                registrar{address,port,ttl_ms} (ttl_ms 0: forget it), status{seq}
proxy -> acpd   hello{pid,uid,gid}, listening{ifname,address,port}, listen_failed{ifname,reason},
                registrar_state{known,address,port}, status_reply{seq,status}
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import socket
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

MAX_MESSAGE = 64 * 1024
MAX_FDS = 4
IFNAME_MAX = 15


class HandoverError(ValueError):
    """A message that breaks the protocol (one line; the peer is buggy or hostile)."""


@dataclass(frozen=True)
class Listen:
    """Take this listening TCP socket (the one fd of the message) for a DULL interface."""
    ifname: str
    address: str
    port: int
    op: str = field(default="listen", init=False)


@dataclass(frozen=True)
class Unlisten:
    ifname: str
    op: str = field(default="unlisten", init=False)


@dataclass(frozen=True)
class Registrar:
    """An AN_join_registrar flood was heard: locator and its ttl (0 withdraws it)."""
    address: str
    port: int
    ttl_ms: int
    op: str = field(default="registrar", init=False)


@dataclass(frozen=True)
class StatusRequest:
    seq: int
    op: str = field(default="status", init=False)


@dataclass(frozen=True)
class Hello:
    pid: int
    uid: int
    gid: int
    op: str = field(default="hello", init=False)


@dataclass(frozen=True)
class Listening:
    ifname: str
    address: str
    port: int
    op: str = field(default="listening", init=False)


@dataclass(frozen=True)
class ListenFailed:
    ifname: str
    reason: str
    op: str = field(default="listen_failed", init=False)


@dataclass(frozen=True)
class RegistrarState:
    """Whether the proxy can relay now, and to whom (address/port None when not known)."""
    known: bool
    address: str | None = None
    port: int | None = None
    op: str = field(default="registrar_state", init=False)


@dataclass(frozen=True)
class StatusReply:
    seq: int
    status: dict[str, Any]
    op: str = field(default="status_reply", init=False)


Message = (Listen | Unlisten | Registrar | StatusRequest | Hello | Listening | ListenFailed
           | RegistrarState | StatusReply)
_MESSAGE_TYPES: tuple[type[Message], ...] = (
    Listen, Unlisten, Registrar, StatusRequest, Hello, Listening, ListenFailed, RegistrarState,
    StatusReply)
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
        return str(ipaddress.IPv6Address(value))
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
    if name == "known":
        if not isinstance(value, bool):
            raise HandoverError(f"known {value!r} is not true/false")
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
    data = json.dumps(asdict(msg), separators=(",", ":"), default=str).encode()
    if len(data) > MAX_MESSAGE:
        raise HandoverError(f"{msg.op} message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes, fd_count: int = 0) -> Message:
    """One datagram (and how many descriptors came with it) -> a checked message."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
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
    names = [f.name for f in fields(kind) if f.init]
    missing = [f.name for f in fields(kind)
               if f.init and f.default is MISSING and f.name not in obj]
    if missing:
        raise HandoverError(f"{op}: missing {', '.join(missing)}")
    extra = sorted(set(obj) - set(names))
    if extra:
        raise HandoverError(f"{op}: unexpected field {extra[0]!r}")
    return kind(**{name: _check_field(op, name, value) for name, value in obj.items()})


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _parse(data: bytes, fds: list[int], flags: int) -> Message:
    """Check a received datagram; on any error close the descriptors that came with it."""
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise HandoverError("message or its descriptors were truncated")
        return decode(data, len(fds))
    except HandoverError:
        _close_all(fds)
        raise


def send_message(sock: socket.socket, msg: Message, fds: tuple[int, ...] = ()) -> None:
    """Blocking send of one message (a blocking socket, or one with room: they are small)."""
    data = encode(msg)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv_message(sock: socket.socket) -> tuple[Message, list[int]] | None:
    """Blocking receive; None at end of stream. The caller owns the returned descriptors."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data and not fds:
        return None
    return _parse(data, fds, flags), fds


class HandoverChannel:
    """One end of the socketpair, on the running asyncio loop."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._loop = asyncio.get_running_loop()

    async def _wait(self, writable: bool) -> None:
        fut = self._loop.create_future()
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

    async def send(self, msg: Message, fds: tuple[int, ...] = ()) -> None:
        while True:
            try:
                send_message(self.sock, msg, fds)
                return
            except BlockingIOError:
                await self._wait(writable=True)

    async def receive(self) -> tuple[Message, list[int]] | None:
        """Next message and its descriptors; None when the peer closed (or the socket broke)."""
        while True:
            try:
                return recv_message(self.sock)
            except BlockingIOError:
                await self._wait(writable=False)
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                    return None
                raise

    def close(self) -> None:
        self.sock.close()

"""The ubus wire protocol, client side, sans-I/O: bytes from ubusd in, events out, bytes to send.

Why our own and not python-ubus: python-ubus (0.1.3, what OpenWrt ships) holds Python's GIL
while libubus waits for ubusd, has no timeouts, one global connection, and refuses any call
argument its signature does not declare (uhttpd adds `ubus_rpc_session` to every LuCI call).
A hung ubusd then froze all of acpd, SIGTERM included. This core only frames and parses; the
asyncio adapter (ubus_bridge) owns the socket and every timeout, so nothing can block acpd.

A message is an 8-byte header (version 0, type, seq: u16, peer: u32, big-endian) and one blob
attribute (id 0) holding the message's attributes (ubusmsg.h). ubusd sends HELLO first (peer =
our client id); a request of ours (ADD_OBJECT, INVOKE of the event object, PING) is answered
with DATA messages of the same seq, then a STATUS (PING too: the pong). ubusd forwards
calls of our object as INVOKE (peer = the caller); we answer DATA (OBJID, DATA) then STATUS
(STATUS, OBJID) with the caller's seq and peer, as libubus does (libubus-req.c).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from . import blobmsg
from .blobmsg import BlobError

# message types (ubusmsg.h)
HELLO, STATUS, DATA, PING, LOOKUP, INVOKE, ADD_OBJECT, REMOVE_OBJECT = range(8)
# attributes
(ATTR_STATUS, ATTR_OBJPATH, ATTR_OBJID, ATTR_METHOD, ATTR_OBJTYPE, ATTR_SIGNATURE, ATTR_DATA,
 ATTR_TARGET, ATTR_ACTIVE, ATTR_NO_REPLY, ATTR_SUBSCRIBERS, ATTR_USER, ATTR_GROUP) = range(1, 14)
# status codes
(STATUS_OK, STATUS_INVALID_COMMAND, STATUS_INVALID_ARGUMENT, STATUS_METHOD_NOT_FOUND,
 STATUS_NOT_FOUND, STATUS_NO_DATA, STATUS_PERMISSION_DENIED, STATUS_TIMEOUT,
 STATUS_NOT_SUPPORTED, STATUS_UNKNOWN_ERROR) = range(10)
SYSTEM_OBJECT_EVENT = 1
HEADER = struct.Struct(">BBHI")
MAX_MESSAGE = 1024 * 1024   # UBUS_MAX_MSGLEN: ubusd refuses anything longer, so do we
_STRING_ATTRS = (ATTR_OBJPATH, ATTR_METHOD, ATTR_USER, ATTR_GROUP)
_U32_ATTRS = (ATTR_STATUS, ATTR_OBJID, ATTR_OBJTYPE, ATTR_TARGET)


class UbusProtocolError(Exception):
    """ubusd sent something this client cannot frame: the connection must be dropped."""


@dataclass(frozen=True)
class Hello:
    client_id: int


@dataclass(frozen=True)
class Invoke:
    """A call of one of our objects, relayed by ubusd."""
    seq: int
    peer: int
    object_id: int
    method: str
    args: dict[str, Any]
    no_reply: bool = False


@dataclass(frozen=True)
class RequestDone:
    """The STATUS ending a request of ours, with the DATA that came before it."""
    seq: int
    status: int
    data: list[dict[int, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Malformed:
    """A message that framed but made no sense (counted and dropped; the stream stays sane)."""
    reason: str


UbusEvent = Hello | Invoke | RequestDone | Malformed


def _parse_attrs(payload: memoryview) -> dict[int, Any]:
    attrs: dict[int, Any] = {}
    for attr_id, _extended, data in blobmsg.iter_attrs(payload):
        if attr_id in _U32_ATTRS:
            if len(data) != 4:
                raise BlobError(f"ubus attribute {attr_id} is not 32 bits")
            attrs[attr_id] = struct.unpack(">I", data)[0]
        elif attr_id in _STRING_ATTRS:
            raw = bytes(data)
            if not raw.endswith(b"\0"):
                raise BlobError(f"ubus attribute {attr_id} is not a string")
            attrs[attr_id] = raw[:-1].decode(errors="replace")
        elif attr_id == ATTR_NO_REPLY:
            attrs[attr_id] = bool(data[0]) if len(data) else False
        elif attr_id == ATTR_DATA:
            attrs[attr_id] = blobmsg.decode_table(data)
        elif attr_id == ATTR_SIGNATURE:
            attrs[attr_id] = data  # only ubusd's lookup answers carry it; not parsed
    return attrs


def _u32(attr_id: int, value: int) -> bytes:
    return blobmsg.attr(attr_id, struct.pack(">I", value & 0xFFFFFFFF))


def _string(attr_id: int, value: str) -> bytes:
    return blobmsg.attr(attr_id, value.encode() + b"\0")


class UbusClientProtocol:
    """One connection to ubusd: feed it `receive(bytes)`, send what the builders return."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._seq = 0
        self._pending: dict[int, list[dict[int, Any]]] = {}
        self.client_id: int | None = None

    # --- out -----------------------------------------------------------------------------------

    def _message(self, kind: int, seq: int, peer: int, attrs: bytes) -> bytes:
        return HEADER.pack(0, kind, seq, peer) + blobmsg.attr(0, attrs)

    def _request(self, kind: int, peer: int, attrs: bytes) -> tuple[int, bytes]:
        self._seq = (self._seq + 1) & 0xFFFF or 1
        self._pending[self._seq] = []
        return self._seq, self._message(kind, self._seq, peer, attrs)

    def add_object(self, path: str, methods: dict[str, dict[str, int]]) -> tuple[int, bytes]:
        """Register `path` with method signatures {method: {arg: blobmsg type}}; the answer's
        DATA carries ATTR_OBJID."""
        signature = blobmsg.encode_table(methods)
        return self._request(ADD_OBJECT, 0, _string(ATTR_OBJPATH, path) +
                             blobmsg.attr(ATTR_SIGNATURE, signature))

    def send_event(self, name: str, data: dict[str, Any]) -> tuple[int, bytes]:
        """`ubus send NAME DATA`: an INVOKE of method "send" on ubusd's event object."""
        body = blobmsg.encode_table({"id": name, "data": data})
        return self._request(INVOKE, SYSTEM_OBJECT_EVENT,
                             _u32(ATTR_OBJID, SYSTEM_OBJECT_EVENT) + _string(ATTR_METHOD, "send")
                             + blobmsg.attr(ATTR_DATA, body))

    def ping(self) -> tuple[int, bytes]:
        """A PING: ubusd echoes it as DATA, then STATUS 0 (ubusd_send_pong): a liveness probe."""
        return self._request(PING, 0, b"")

    def reply(self, call: Invoke, data: dict[str, Any] | None, status: int = STATUS_OK) -> bytes:
        """The answer to a call: DATA (when there is data), then the STATUS that ends it."""
        out = b""
        if data is not None:
            out += self._message(DATA, call.seq, call.peer, _u32(ATTR_OBJID, call.object_id) +
                                 blobmsg.attr(ATTR_DATA, blobmsg.encode_table(data)))
        return out + self._message(STATUS, call.seq, call.peer,
                                   _u32(ATTR_STATUS, status) + _u32(ATTR_OBJID, call.object_id))

    def forget(self, seq: int) -> None:
        """A request given up on (timed out): its late answer is then ignored."""
        self._pending.pop(seq, None)

    # --- in ------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[UbusEvent]:
        """Frame and parse what ubusd sent; raises UbusProtocolError when framing is lost."""
        self._buffer += data
        out: list[UbusEvent] = []
        while len(self._buffer) >= HEADER.size + blobmsg.HEADER:
            version, kind, seq, peer = HEADER.unpack_from(self._buffer)
            (blob_header,) = struct.unpack_from(">I", self._buffer, HEADER.size)
            length = blob_header & blobmsg.LEN_MASK
            if version != 0 or length < blobmsg.HEADER or length > MAX_MESSAGE:
                raise UbusProtocolError(f"bad ubus message header (version {version}, "
                                        f"length {length})")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = memoryview(bytes(self._buffer[HEADER.size + blobmsg.HEADER:end]))
            del self._buffer[:end]
            try:
                event = self._event(kind, seq, peer, _parse_attrs(payload))
            except (BlobError, UnicodeDecodeError) as exc:
                event = Malformed(f"message type {kind}: {exc}")
            if event is not None:
                out.append(event)
        return out

    def _event(self, kind: int, seq: int, peer: int, attrs: dict[int, Any]) -> UbusEvent | None:
        if kind == HELLO:
            self.client_id = peer
            return Hello(peer)
        if kind == INVOKE:
            if ATTR_OBJID not in attrs or ATTR_METHOD not in attrs:
                return Malformed("INVOKE without object or method")
            return Invoke(seq, peer, attrs[ATTR_OBJID], attrs[ATTR_METHOD],
                          attrs.get(ATTR_DATA, {}), attrs.get(ATTR_NO_REPLY, False))
        if kind == DATA and seq in self._pending:
            self._pending[seq].append(attrs)
            return None
        if kind == STATUS and seq in self._pending:
            return RequestDone(seq, attrs.get(ATTR_STATUS, STATUS_UNKNOWN_ERROR),
                               self._pending.pop(seq))
        return None  # an answer to a request given up on, or a message type we never asked for


__all__ = ["Hello", "Invoke", "Malformed", "RequestDone", "UbusClientProtocol",
           "UbusEvent", "UbusProtocolError"]

"""libubox's blob and blobmsg encodings (what ubus carries), pure and bounds-checked.

A blob attribute is a 32-bit big-endian header (bit 31: extended, bits 24-30: id, bits 0-23:
length including the header) and its payload, padded to 4 bytes before the next attribute.
blobmsg attributes are extended blob attributes whose payload starts with a name (16-bit
length, the bytes, a NUL, padded to 4) and whose id is the blobmsg type. Decoding takes
bytes from a peer (ubusd relays whatever any local client sent): every length is checked and
anything malformed raises BlobError, never IndexError or a silent truncation.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

ALIGN = 4
EXTENDED = 0x80000000
ID_SHIFT = 24
ID_MASK = 0x7F000000
LEN_MASK = 0x00FFFFFF
HEADER = 4
MAX_DEPTH = 32       # nesting a reply or a call may have; deeper input is refused, not recursed

# blobmsg types (libubox/blobmsg.h)
UNSPEC, ARRAY, TABLE, STRING, INT64, INT32, INT16, INT8, DOUBLE = range(9)
BOOL = INT8
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


class BlobError(ValueError):
    """Malformed blob or blobmsg data."""


def pad(length: int) -> int:
    return (length + ALIGN - 1) & ~(ALIGN - 1)


def attr(attr_id: int, payload: bytes, extended: bool = False) -> bytes:
    """One blob attribute, padded."""
    length = HEADER + len(payload)
    if length > LEN_MASK:
        raise BlobError(f"attribute of {length} bytes is too long for a blob")
    header = (EXTENDED if extended else 0) | (attr_id << ID_SHIFT) | length
    return struct.pack(">I", header) + payload + b"\0" * (pad(length) - length)


def iter_attrs(data: bytes | memoryview) -> Iterator[tuple[int, bool, memoryview]]:
    """(id, extended, payload) of each attribute in a sequence of them."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if len(view) - offset < HEADER:
            raise BlobError("truncated blob attribute header")
        (header,) = struct.unpack_from(">I", view, offset)
        length = header & LEN_MASK
        if length < HEADER or offset + length > len(view):
            raise BlobError(f"blob attribute length {length} does not fit its container")
        yield (header & ID_MASK) >> ID_SHIFT, bool(header & EXTENDED), \
            view[offset + HEADER:offset + length]
        offset += pad(length)


# --- blobmsg ------------------------------------------------------------------------------------

def _named(kind: int, name: str, payload: bytes) -> bytes:
    raw = name.encode()
    if len(raw) > 0xFFFF:
        raise BlobError("blobmsg name too long")
    head = struct.pack(">H", len(raw)) + raw + b"\0"
    return attr(kind, head + b"\0" * (pad(len(head)) - len(head)) + payload, extended=True)


def _value(name: str, value: Any, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise BlobError("value nested too deeply for blobmsg")
    if isinstance(value, bool):
        return _named(BOOL, name, bytes([value]))
    if isinstance(value, int):
        if INT32_MIN <= value <= INT32_MAX:
            return _named(INT32, name, struct.pack(">i", value))
        return _named(INT64, name, struct.pack(">q", value))
    if isinstance(value, float):
        return _named(DOUBLE, name, struct.pack(">d", value))
    if isinstance(value, str):
        return _named(STRING, name, value.encode() + b"\0")
    if isinstance(value, Mapping):
        return _named(TABLE, name, encode_table(value, depth + 1))
    if isinstance(value, (list, tuple)):
        return _named(ARRAY, name, b"".join(_value("", v, depth + 1)
                                            for v in value if v is not None))
    raise BlobError(f"blobmsg cannot carry {type(value).__name__}")


def encode_table(table: Mapping[str, Any], depth: int = 0) -> bytes:
    """The attributes of a blobmsg table (None values are left out: blobmsg has no null)."""
    return b"".join(_value(str(k), v, depth) for k, v in table.items() if v is not None)


def _decode_value(kind: int, data: memoryview, depth: int) -> Any:
    if kind == TABLE:
        return decode_table(data, depth + 1)
    if kind == ARRAY:
        return [value for _name, value in _decode_items(data, depth + 1)]
    if kind == STRING:
        raw = bytes(data)
        if not raw.endswith(b"\0"):
            raise BlobError("blobmsg string without its NUL")
        try:
            return raw[:-1].decode()
        except UnicodeDecodeError:
            raise BlobError("blobmsg string is not UTF-8") from None
    sizes = {INT8: (1, ">b"), INT16: (2, ">h"), INT32: (4, ">i"), INT64: (8, ">q"),
             DOUBLE: (8, ">d")}
    if kind in sizes:
        size, fmt = sizes[kind]
        if len(data) < size:
            raise BlobError(f"blobmsg number of type {kind} is truncated")
        value = struct.unpack_from(fmt, data)[0]
        return bool(value) if kind == INT8 else value
    if kind == UNSPEC:
        return None
    raise BlobError(f"unknown blobmsg type {kind}")


def _decode_items(data: memoryview, depth: int) -> Iterator[tuple[str, Any]]:
    if depth > MAX_DEPTH:
        raise BlobError("blobmsg nested too deeply")
    for kind, extended, payload in iter_attrs(data):
        if not extended:
            raise BlobError("blobmsg attribute without the extended bit")
        if len(payload) < 2:
            raise BlobError("blobmsg attribute without a name header")
        (namelen,) = struct.unpack_from(">H", payload)
        start = pad(2 + namelen + 1)
        if start > len(payload) or payload[2 + namelen] != 0:
            raise BlobError("blobmsg name does not fit its attribute")
        try:
            name = bytes(payload[2:2 + namelen]).decode()
        except UnicodeDecodeError:
            raise BlobError("blobmsg name is not UTF-8") from None
        yield name, _decode_value(kind, payload[start:], depth)


def decode_table(data: bytes | memoryview, depth: int = 0) -> dict[str, Any]:
    """A blobmsg table's attributes as a dict (the last of repeated names wins)."""
    return dict(_decode_items(memoryview(data), depth))


__all__ = ["ARRAY", "BOOL", "BlobError", "DOUBLE", "INT32", "INT64", "STRING", "TABLE", "attr",
           "decode_table", "encode_table", "iter_attrs", "pad"]

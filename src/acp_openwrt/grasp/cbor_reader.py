"""A strict, bounded CBOR reader (RFC 8949) for untrusted input: the codec's careful path.

Why not only cbor2: cbor2 interprets well-known tags while decoding (datetimes, bignums,
shared references, regular expressions …), so a tag where GRASP expects an integer can come
out as an integer, and its limits differ between versions. This reader keeps every tag as a
raw ``CBORTag``, never interprets anything, checks each declared length against the bytes that
are actually left before allocating, caps nesting depth, and reports where the item ends (so
trailing bytes and stream framing are exact). It is slower than cbor2's C decoder, so the codec
uses it only when the fast path cannot vouch for a message (see codec.py).
"""
from __future__ import annotations

from typing import Any

from cbor2 import CBORSimpleValue, CBORTag, undefined

from .constants import MAX_NESTING_DEPTH


class CborError(ValueError):
    """Malformed or refused CBOR; ``str()`` is a short reason."""


class CborIncomplete(CborError):
    """The input ends inside an item (a stream reader waits for more)."""


_BREAK = object()
_FLOAT_FORMATS = {25: ">e", 26: ">f", 27: ">d"}


def read_item(data: bytes, pos: int = 0, max_depth: int = MAX_NESTING_DEPTH) -> tuple[Any, int]:
    """Decode one item starting at ``pos``; return (value, position after it)."""
    value, end = _item(data, pos, max_depth)
    if value is _BREAK:
        raise CborError("unexpected break byte")
    return value, end


def _argument(data: bytes, pos: int, ai: int) -> tuple[int, int]:
    if ai < 24:
        return ai, pos
    if ai > 27:
        raise CborError(f"reserved additional information {ai}")
    size = 1 << (ai - 24)
    end = pos + size
    if end > len(data):
        raise CborIncomplete("truncated CBOR item")
    return int.from_bytes(data[pos:end], "big"), end


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise CborIncomplete("truncated CBOR item")
    ib = data[pos]
    major = ib >> 5
    ai = ib & 0x1F
    pos += 1
    if ai == 31:
        return _indefinite(data, pos, major, depth)
    if major == 7:
        return _simple(data, pos, ai)
    arg, pos = _argument(data, pos, ai)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:
        end = pos + arg
        if end > len(data):
            raise CborIncomplete("truncated string")
        raw = data[pos:end]
        if major == 2:
            return bytes(raw), end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise CborError("invalid UTF-8 in text string") from None
    if depth <= 0:
        raise CborError("nesting too deep")
    if major == 4:
        if arg > len(data) - pos:
            raise CborIncomplete("array longer than the input")
        items = []
        for _ in range(arg):
            value, pos = _item(data, pos, depth - 1)
            if value is _BREAK:
                raise CborError("unexpected break byte")
            items.append(value)
        return items, pos
    if major == 5:
        if 2 * arg > len(data) - pos:
            raise CborIncomplete("map longer than the input")
        result: dict[Any, Any] = {}
        for _ in range(arg):
            pos = _map_entry(data, pos, depth, result)
        return result, pos
    value, pos = _item(data, pos, depth - 1)  # major 6: a tag, kept raw
    if value is _BREAK:
        raise CborError("unexpected break byte")
    return CBORTag(arg, value), pos


def _map_entry(data: bytes, pos: int, depth: int, result: dict[Any, Any]) -> int:
    key, pos = _item(data, pos, depth - 1)
    if key is _BREAK:
        raise CborError("unexpected break byte")
    value, pos = _item(data, pos, depth - 1)
    if value is _BREAK:
        raise CborError("unexpected break byte")
    try:
        duplicate = key in result
    except TypeError:  # a list, a map or a tag around one: unhashable
        raise CborError("map key is not a simple value") from None
    if duplicate:
        raise CborError("duplicate map key")
    result[key] = value
    return pos


def _simple(data: bytes, pos: int, ai: int) -> tuple[Any, int]:
    if ai < 20:
        return CBORSimpleValue(ai), pos
    if ai == 20:
        return False, pos
    if ai == 21:
        return True, pos
    if ai == 22:
        return None, pos
    if ai == 23:
        return undefined, pos
    if ai == 24:
        if pos >= len(data):
            raise CborIncomplete("truncated simple value")
        if data[pos] < 32:
            raise CborError("malformed simple value")
        return CBORSimpleValue(data[pos]), pos + 1
    if ai in _FLOAT_FORMATS:
        import struct

        size = 1 << (ai - 24)
        if pos + size > len(data):
            raise CborIncomplete("truncated float")
        return struct.unpack(_FLOAT_FORMATS[ai], data[pos:pos + size])[0], pos + size
    raise CborError(f"reserved additional information {ai}")


def _indefinite(data: bytes, pos: int, major: int, depth: int) -> tuple[Any, int]:
    if major == 7:
        return _BREAK, pos
    if major in (0, 1, 6):
        raise CborError("indefinite length not allowed here")
    if depth <= 0:
        raise CborError("nesting too deep")
    if major in (2, 3):
        chunks = []
        while True:
            if pos >= len(data):
                raise CborIncomplete("truncated string")
            if data[pos] == 0xFF:
                pos += 1
                break
            if data[pos] >> 5 != major or data[pos] & 0x1F == 31:
                raise CborError("bad chunk in indefinite-length string")
            chunk, pos = _item(data, pos, depth - 1)
            chunks.append(chunk)
        return (b"".join(chunks) if major == 2 else "".join(chunks)), pos
    if major == 4:
        items: list[Any] = []
        while True:
            value, pos = _item(data, pos, depth - 1)
            if value is _BREAK:
                return items, pos
            items.append(value)
    result: dict[Any, Any] = {}
    while True:
        if pos < len(data) and data[pos] == 0xFF:
            return result, pos + 1
        pos = _map_entry(data, pos, depth, result)

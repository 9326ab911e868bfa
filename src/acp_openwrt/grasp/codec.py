"""GRASP wire codec: bytes <-> messages (RFC 8990 §2.8, CDDL §4), strict on input.

``decode`` accepts any bytes and either returns a message or raises ``GraspDecodeError`` with a
short reason; no other exception escapes it. Two paths lead there:

* fast: cbor2's C decoder, then a type-exact validation that also adds up the size the
  message would have in canonical CBOR. Only if that size equals the input length is the
  message accepted here: equal sizes prove there were no trailing bytes, no tags or
  indefinite lengths hiding in the structure (cbor2 turns some tags, e.g. bignums, into plain
  integers) and no over-long integers. Every canonical sender (the RFC vectors, graspy, us)
  takes this path.
* careful: anything else is re-read by ``cbor_reader`` (tags kept raw, lengths checked before
  allocation, depth capped, exact end position) and validated again; it decides.

Options not consistent with the message type (RFC 8990 §2.8.2: an unknown option type, or a
known one in a message that does not carry it) are skipped, not refused: an option is an array
starting with an unsigned integer (§2.9.1), and the decoder counts what it skipped
(``decode_counted``). A flood pair whose locator option is of an unknown type is skipped with
it, since its objective is only meaningful at that locator. Anything else out of place (a bare
value, a second objective, a malformed option of a known type) still refuses the message.

``encode`` writes canonical CBOR (definite lengths, shortest integers), so decode-then-encode of
a canonical message gives the same bytes (minus any skipped options).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
from cbor2 import CBORSimpleValue, CBORTag, undefined

from . import constants as c
from .cbor_reader import CborError, CborIncomplete, read_item
from .messages import (
    ABSENT,
    MTYPE,
    Discovery,
    End,
    Flood,
    Invalid,
    Locator,
    Message,
    Negotiate,
    Noop,
    Objective,
    RequestNegotiation,
    RequestSynchronization,
    Response,
    Synch,
    TaggedObjective,
    Wait,
)


class GraspDecodeError(ValueError):
    """Input that is not a valid GRASP message; ``str()`` is a one-line reason."""


class _NotCanonical(Exception):
    """The fast path cannot vouch for this input; the careful path must decide."""


def _detect_fast_loads() -> Callable[[bytes], Any] | None:
    """cbor2's C decoder with a depth cap, if this cbor2 has one (6.x); else no fast path."""
    try:
        cbor2.loads(b"\x80", max_depth=c.MAX_NESTING_DEPTH)
    except TypeError:
        return None
    loads = cbor2.loads
    depth = c.MAX_NESTING_DEPTH
    return lambda data: loads(data, max_depth=depth)


_FAST_LOADS = _detect_fast_loads()
_U32 = c.UINT32_MAX


def _hdr(n: int) -> int:
    """Bytes of a canonical CBOR head carrying argument n."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n <= _U32 else 9


def decode(data: bytes, max_size: int = c.GRASP_DEF_MAX_SIZE) -> Message:
    """Decode and validate one complete GRASP message (no trailing bytes)."""
    return decode_counted(data, max_size)[0]


def decode_counted(data: bytes, max_size: int = c.GRASP_DEF_MAX_SIZE) -> tuple[Message, int]:
    """``decode``, and how many options it skipped (not consistent with the message type)."""
    if type(data) is not bytes:
        try:
            data = bytes(data)
        except Exception:
            raise GraspDecodeError("input is not bytes") from None
    n = len(data)
    if n > max_size:
        raise GraspDecodeError(f"message of {n} bytes exceeds the limit of {max_size}")
    if n == 0:
        raise GraspDecodeError("empty message")
    if _FAST_LOADS is not None:
        try:
            obj = _FAST_LOADS(data)
        except Exception:
            pass  # malformed, or something cbor2 dislikes: the careful path gives the reason
        else:
            try:
                msg, size, skipped = validate(obj, True)
            except _NotCanonical:
                pass
            else:
                if size == n:
                    return msg, skipped
    return _decode_careful_counted(data)


def _decode_careful(data: bytes) -> Message:
    return _decode_careful_counted(data)[0]


def _decode_careful_counted(data: bytes) -> tuple[Message, int]:
    try:
        obj, end = read_item(data, 0)
    except CborIncomplete:
        raise GraspDecodeError("truncated CBOR") from None
    except CborError as exc:
        raise GraspDecodeError(str(exc)) from None
    except Exception as exc:  # MemoryError and the like: still only our error type
        raise GraspDecodeError(f"undecodable CBOR ({type(exc).__name__})") from None
    if end != len(data):
        raise GraspDecodeError(f"{len(data) - end} trailing bytes after the message")
    try:
        msg, _, skipped = validate(obj, False)
        return msg, skipped
    except _NotCanonical:  # cannot happen with the careful reader's types; be safe anyway
        raise GraspDecodeError("unsupported value type") from None


def validate(obj: Any, sizing: bool = False) -> tuple[Message, int, int]:
    """Check a decoded CBOR item against the GRASP CDDL; return the message, when ``sizing``
    its canonical encoded size (else 0), and how many options were skipped."""
    if type(obj) is not list:
        raise GraspDecodeError("message is not a CBOR array")
    if not obj:
        raise GraspDecodeError("empty array")
    mtype = obj[0]
    if type(mtype) is not int:
        raise GraspDecodeError("message type is not an unsigned integer")
    if mtype == c.M_NOOP:
        if len(obj) != 1:
            raise GraspDecodeError("M_NOOP carries no fields")
        return Noop(), 2, 0
    handler = _HANDLERS.get(mtype)
    if handler is None:
        shown = mtype if 0 <= mtype <= 255 else "(out of range)"
        raise GraspDecodeError(f"unknown message type {shown}")
    if len(obj) < 2:
        raise GraspDecodeError("missing session id")
    sid = obj[1]
    if type(sid) is not int or not 0 <= sid <= _U32:
        raise GraspDecodeError("session id is not a uint32")
    msg, size, skipped = handler(obj, sid, sizing)
    if not sizing:
        return msg, 0, skipped
    # the heads of the array, the type (1..9 or 99) and the uint32 session id, with _hdr's
    # arithmetic inlined: every received message passes here
    n = len(obj)
    size += ((1 if n < 24 else _hdr(n)) + (1 if mtype < 24 else 2)
             + (1 if sid < 24 else 2 if sid < 0x100 else 3 if sid < 0x10000 else 5))
    return msg, size, skipped


class _UnknownOption(GraspDecodeError):
    """An option of a type this place does not take (the caller may skip it)."""


def _is_option(x: Any) -> bool:
    """§2.9.1: an option is an array starting with its type, an unsigned integer."""
    return type(x) is list and len(x) > 0 and type(x[0]) is int and x[0] >= 0


def _skip_options(items: list[Any], known: tuple[int, ...], sizing: bool
                  ) -> tuple[list[Any], int, int]:
    """``items`` without the options whose type is not in ``known`` (§2.8.2: silently
    discarded); returns (what is left, how many were skipped, their canonical size)."""
    kept = []
    skipped = size = 0
    for item in items:
        if _is_option(item) and item[0] not in known:
            skipped += 1
            if sizing:
                size += _value_size(item, c.MAX_NESTING_DEPTH - 1)
        else:
            kept.append(item)
    return kept, skipped, size


def _expect_len(obj: list[Any], allowed: tuple[int, ...], name: str) -> None:
    if len(obj) not in allowed:
        expected = " or ".join(map(str, allowed))
        raise GraspDecodeError(f"{name} has {len(obj)} elements, expected {expected}")


def _initiator(x: Any) -> int:
    if type(x) is not bytes or len(x) not in (16, 4):
        raise GraspDecodeError("initiator is not a 16- or 4-byte address")
    return len(x) + 1


def _ttl(x: Any, what: str = "ttl") -> int:
    if type(x) is not int or not 0 <= x <= _U32:
        raise GraspDecodeError(f"{what} is not a uint32")
    return _hdr(x)


def _objective(x: Any, sizing: bool) -> tuple[Objective, int]:
    if type(x) is not list:
        raise GraspDecodeError("objective is not an array")
    n = len(x)
    if n != 3 and n != 4:
        raise GraspDecodeError("objective needs 3 or 4 elements")
    name, flags, loop = x[0], x[1], x[2]
    if type(name) is not str or not name:
        raise GraspDecodeError("objective name is not a non-empty text string")
    if type(flags) is not int or not 0 <= flags <= c.F_ALL:
        raise GraspDecodeError("objective flags out of range")
    if type(loop) is not int or not 0 <= loop <= 255:
        raise GraspDecodeError("loop count out of range")
    if n == 3:
        value = ABSENT
        size = 0
    else:
        value = x[3]
        size = _value_size(value, c.MAX_NESTING_DEPTH - 3) if sizing else 0
    if sizing:
        ln = len(name) if name.isascii() else len(name.encode())
        size += 1 + _hdr(ln) + ln + _hdr(flags) + _hdr(loop)
    return Objective(name, flags, loop, value), size


def _value_size(v: Any, depth: int) -> int:
    """Canonical size of an objective value; _NotCanonical for anything cbor2 may have
    interpreted (floats, datetimes, big integers …) or nested too deep."""
    t = type(v)
    if t is int:
        if 0 <= v <= 0xFFFFFFFFFFFFFFFF:
            return _hdr(v)
        if -0x10000000000000000 <= v < 0:
            return _hdr(-1 - v)
        raise _NotCanonical
    if t is str:
        ln = len(v) if v.isascii() else len(v.encode())
        return _hdr(ln) + ln
    if t is bytes:
        return _hdr(len(v)) + len(v)
    if depth <= 0:
        raise _NotCanonical
    if t is list:
        size = _hdr(len(v))
        for item in v:
            size += _value_size(item, depth - 1)
        return size
    if t is dict:
        size = _hdr(len(v))
        for key, item in v.items():
            size += _value_size(key, depth - 1) + _value_size(item, depth - 1)
        return size
    if t is bool or v is None or v is undefined:
        return 1
    if t is CBORTag:
        return _hdr(v.tag) + _value_size(v.value, depth - 1)
    if t is CBORSimpleValue:
        return 1 if v.value < 24 else 2
    raise _NotCanonical


def _locator(x: Any) -> tuple[Locator, int]:
    if type(x) is not list or not x or type(x[0]) is not int:
        raise GraspDecodeError("option is not an array starting with an option code")
    kind = x[0]
    if kind not in (c.O_IPv6_LOCATOR, c.O_IPv4_LOCATOR, c.O_FQDN_LOCATOR, c.O_URI_LOCATOR):
        raise _UnknownOption(f"option {kind if 0 <= kind <= 255 else '?'} is not a locator")
    if len(x) != 4:
        raise GraspDecodeError("locator option needs 4 elements")
    addr, proto, port = x[1], x[2], x[3]
    if kind == c.O_IPv6_LOCATOR or kind == c.O_IPv4_LOCATOR:
        want = 16 if kind == c.O_IPv6_LOCATOR else 4
        if type(addr) is not bytes or len(addr) != want:
            raise GraspDecodeError(f"locator address is not {want} bytes")
        size = 1 + want
    else:
        if type(addr) is not str or not addr:
            raise GraspDecodeError("locator name is not a non-empty text string")
        ln = len(addr) if addr.isascii() else len(addr.encode())
        size = _hdr(ln) + ln
    if kind == c.O_URI_LOCATOR and proto is None and port is None:
        return Locator(kind, addr, None, None), size + 5
    if type(proto) is not int or (proto != c.IPPROTO_TCP and proto != c.IPPROTO_UDP):
        raise GraspDecodeError("locator protocol is not 6 (TCP) or 17 (UDP)")
    if type(port) is not int or not 0 <= port <= 0xFFFF:
        raise GraspDecodeError("locator port out of range")
    return Locator(kind, addr, proto, port), size + 4 + _hdr(port)


def _discovery(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
    skipped = extra = 0
    if len(obj) != 4:
        rest, skipped, extra = _skip_options(obj[3:], (), sizing)
        obj = obj[:3] + rest
        _expect_len(obj, (4,), "M_DISCOVERY")
    size = _initiator(obj[2])
    objective, osize = _objective(obj[3], sizing)
    return Discovery(sid, obj[2], objective), size + osize + extra, skipped


_RESPONSE_OPTIONS = (c.O_DIVERT, c.O_IPv6_LOCATOR, c.O_IPv4_LOCATOR, c.O_FQDN_LOCATOR,
                     c.O_URI_LOCATOR)
_LOCATORS = _RESPONSE_OPTIONS[1:]


def _response(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
    if len(obj) < 5:
        raise GraspDecodeError("M_RESPONSE needs a ttl and a locator")
    size = _initiator(obj[2]) + _ttl(obj[3])
    rest, skipped, extra = _skip_options(obj[4:], _RESPONSE_OPTIONS, sizing)
    size += extra
    if not rest:
        raise GraspDecodeError("M_RESPONSE without a locator")
    objective = None
    if type(rest[-1]) is list and rest[-1] and type(rest[-1][0]) is str:
        objective, osize = _objective(rest.pop(), sizing)
        size += osize
    if not rest:
        raise GraspDecodeError("M_RESPONSE without a locator")
    diverted = False
    first = rest[0]
    if type(first) is list and first and type(first[0]) is int and first[0] == c.O_DIVERT:
        if len(rest) != 1:
            raise GraspDecodeError("O_DIVERT must be the only option of an M_RESPONSE")
        if len(first) < 2:
            raise GraspDecodeError("O_DIVERT without a locator")
        diverted = True
        size += 2 + _hdr(len(first))
        rest, inner, extra = _skip_options(first[1:], _LOCATORS, sizing)
        skipped += inner
        size += extra
        if not rest:
            raise GraspDecodeError("O_DIVERT without a locator")
    locators = []
    for item in rest:
        loc, lsize = _locator(item)
        locators.append(loc)
        size += lsize
    return Response(sid, obj[2], obj[3], tuple(locators), diverted, objective), size, skipped


def _objective_only(cls: Any, name: str
                    ) -> Callable[[list[Any], int, bool], tuple[Message, int, int]]:
    def handler(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
        skipped = extra = 0
        if len(obj) != 3:
            rest, skipped, extra = _skip_options(obj[2:], (), sizing)
            obj = obj[:2] + rest
            _expect_len(obj, (3,), name)
        objective, size = _objective(obj[2], sizing)
        return cls(sid, objective), size + extra, skipped
    return handler


_END_OPTIONS = (c.O_ACCEPT, c.O_DECLINE)


def _end(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
    skipped = extra = 0
    if len(obj) != 3 or (_is_option(obj[2]) and obj[2][0] not in _END_OPTIONS):
        rest, skipped, extra = _skip_options(obj[2:], _END_OPTIONS, sizing)
        if not rest:
            raise GraspDecodeError("M_END needs O_ACCEPT or O_DECLINE")
        if len(rest) != 1:
            raise GraspDecodeError(
                f"M_END has {len(rest)} options besides unknown ones, expected 1")
        obj = obj[:2] + rest
    opt = obj[2]
    if type(opt) is not list or not opt or type(opt[0]) is not int:
        raise GraspDecodeError("M_END option is not an array starting with an option code")
    if opt[0] == c.O_ACCEPT:
        if len(opt) != 1:
            raise GraspDecodeError("O_ACCEPT carries no fields")
        return End(sid, True, None), 3 + extra, skipped
    if opt[0] == c.O_DECLINE:
        if len(opt) == 1:
            return End(sid, False, None), 3 + extra, skipped
        reason = opt[1]
        if len(opt) != 2 or type(reason) is not str:
            raise GraspDecodeError("O_DECLINE reason is not one text string")
        ln = len(reason) if reason.isascii() else len(reason.encode())
        return End(sid, False, reason), 3 + _hdr(ln) + ln + extra, skipped
    raise GraspDecodeError("M_END needs O_ACCEPT or O_DECLINE")


def _wait(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
    skipped = extra = 0
    if len(obj) > 3:
        rest, skipped, extra = _skip_options(obj[3:], (), sizing)
        obj = obj[:3] + rest
    _expect_len(obj, (3,), "M_WAIT")
    return Wait(sid, obj[2]), _ttl(obj[2], "waiting time") + extra, skipped


def _flood(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
    if len(obj) < 5:
        raise GraspDecodeError("M_FLOOD needs a ttl and at least one objective")
    init = obj[2]
    size = _initiator(init) + _ttl(obj[3])
    tagged = []
    skipped = 0
    for pair in obj[4:]:
        try:  # (no cost unless raised)
            if type(pair) is not list or len(pair) != 2:
                raise GraspDecodeError("flood element is not an [objective, locator] pair")
            objective, osize = _objective(pair[0], sizing)
        except GraspDecodeError:
            if not _is_option(pair):
                raise
            skipped += 1  # no flood option is defined: any option here is unknown
            size += _value_size(pair, c.MAX_NESTING_DEPTH - 1) if sizing else 0
            continue
        loc = pair[1]
        if type(loc) is list and not loc:
            tagged.append(TaggedObjective(objective, None))
            size += osize + 2
        else:
            try:
                locator, lsize = _locator(loc)
            except _UnknownOption:  # a locator type from the future: its objective goes too
                skipped += 1
                size += _value_size(pair, c.MAX_NESTING_DEPTH - 1) if sizing else 0
                continue
            tagged.append(TaggedObjective(objective, locator))
            size += osize + lsize + 1
    if skipped and not tagged:
        raise GraspDecodeError("M_FLOOD has no objective besides unknown options")
    return Flood(sid, init, obj[3], tuple(tagged)), size, skipped


def _invalid(obj: list[Any], sid: int, sizing: bool) -> tuple[Message, int, int]:
    skipped = extra = 0
    if len(obj) > 3:  # element 2 is the content (any): only what follows it can be an option
        rest, skipped, extra = _skip_options(obj[3:], (), sizing)
        obj = obj[:3] + rest
    _expect_len(obj, (2, 3), "M_INVALID")
    if len(obj) == 2:
        return Invalid(sid), 0, 0
    return (Invalid(sid, obj[2]),
            (_value_size(obj[2], c.MAX_NESTING_DEPTH - 1) + extra) if sizing else 0, skipped)


_HANDLERS: dict[int, Any] = {
    c.M_DISCOVERY: _discovery,
    c.M_RESPONSE: _response,
    c.M_REQ_NEG: _objective_only(RequestNegotiation, "M_REQ_NEG"),
    c.M_REQ_SYN: _objective_only(RequestSynchronization, "M_REQ_SYN"),
    c.M_NEGOTIATE: _objective_only(Negotiate, "M_NEGOTIATE"),
    c.M_END: _end,
    c.M_WAIT: _wait,
    c.M_SYNCH: _objective_only(Synch, "M_SYNCH"),
    c.M_FLOOD: _flood,
    c.M_INVALID: _invalid,
}


# -- encoding ---------------------------------------------------------------------------------

def objective_to_cbor(o: Objective) -> list[Any]:
    if o.value is ABSENT:
        return [o.name, o.flags, o.loop_count]
    return [o.name, o.flags, o.loop_count, o.value]


def locator_to_cbor(loc: Locator | None) -> list[Any]:
    return [] if loc is None else [loc.kind, loc.address, loc.protocol, loc.port]


def to_cbor(msg: Message) -> list[Any]:
    """The message as the CBOR data model (lists, ints, bytes …), ready for cbor2.dumps."""
    # isinstance, not type(msg) is X: as cheap on CPython 3.11+, and type checkers narrow it;
    # floods first, then what a negotiation or synchronization sends
    if isinstance(msg, Flood):
        out: list[Any] = [c.M_FLOOD, msg.session_id, msg.initiator, msg.ttl]
        for tagged in msg.objectives:
            out.append([objective_to_cbor(tagged.objective), locator_to_cbor(tagged.locator)])
        return out
    if isinstance(msg, (RequestNegotiation, RequestSynchronization, Negotiate, Synch)):
        return [MTYPE[type(msg)], msg.session_id, objective_to_cbor(msg.objective)]
    if isinstance(msg, End):
        if msg.accept:
            return [c.M_END, msg.session_id, [c.O_ACCEPT]]
        opt = [c.O_DECLINE] if msg.reason is None else [c.O_DECLINE, msg.reason]
        return [c.M_END, msg.session_id, opt]
    if isinstance(msg, Discovery):
        return [c.M_DISCOVERY, msg.session_id, msg.initiator, objective_to_cbor(msg.objective)]
    if isinstance(msg, Response):
        locs = [locator_to_cbor(loc) for loc in msg.locators]
        out = [c.M_RESPONSE, msg.session_id, msg.initiator, msg.ttl]
        out.extend([[c.O_DIVERT, *locs]] if msg.diverted else locs)
        if msg.objective is not None:
            out.append(objective_to_cbor(msg.objective))
        return out
    if isinstance(msg, Wait):
        return [c.M_WAIT, msg.session_id, msg.waiting_time]
    if isinstance(msg, Invalid):
        if msg.content is ABSENT:
            return [c.M_INVALID, msg.session_id]
        return [c.M_INVALID, msg.session_id, msg.content]
    if isinstance(msg, Noop):
        return [c.M_NOOP]
    raise TypeError(f"not a GRASP message: {type(msg).__name__}")


def encode(msg: Message) -> bytes:
    """Canonical CBOR bytes of a message."""
    return cbor2.dumps(to_cbor(msg))

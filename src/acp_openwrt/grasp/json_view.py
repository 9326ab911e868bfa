"""A GRASP message as JSON for operators (``acpctl grasp decode HEX``): names instead of
numbers, addresses as text, bytes as hex."""
from __future__ import annotations

import math
from typing import Any

from cbor2 import CBORSimpleValue, CBORTag, undefined

from . import constants as c
from .codec import GraspDecodeError, decode
from .messages import ABSENT, Locator, Message, Objective, ip_address, message_name

_FLAG_NAMES = ((c.F_DISC, "F_DISC"), (c.F_NEG, "F_NEG"), (c.F_SYNCH, "F_SYNCH"),
               (c.F_NEG_DRY, "F_NEG_DRY"))


def _address_text(raw: bytes) -> str:
    return str(ip_address(raw))


def value_to_json(v: Any) -> Any:
    """Any CBOR value in JSON terms; bytes become ``{"hex": …}`` so they are not confused
    with text."""
    t = type(v)
    if t is int or t is str or t is bool or v is None:
        return v
    if t is bytes:
        return {"hex": v.hex()}
    if t is float:
        return v if math.isfinite(v) else repr(v)
    if t is list:
        return [value_to_json(x) for x in v]
    if t is dict:
        if all(type(k) is str for k in v):
            return {k: value_to_json(x) for k, x in v.items()}
        return {"map": [[value_to_json(k), value_to_json(x)] for k, x in v.items()]}
    if t is CBORTag:
        return {"tag": v.tag, "value": value_to_json(v.value)}
    if t is CBORSimpleValue:
        return {"simple": v.value}
    if v is undefined:
        return "undefined"
    return repr(v)


def objective_to_json(o: Objective) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": o.name,
        "flags": [name for bit, name in _FLAG_NAMES if o.flags & bit],
        "loop_count": o.loop_count,
    }
    if o.value is not ABSENT:
        out["value"] = value_to_json(o.value)
    return out


def locator_to_json(loc: Locator) -> dict[str, Any]:
    address = _address_text(loc.address) if isinstance(loc.address, bytes) else loc.address
    return {"type": c.LOCATOR_NAMES[loc.kind], "address": address,
            "protocol": (None if loc.protocol is None
                         else {6: "tcp", 17: "udp"}.get(loc.protocol)),
            "port": loc.port}


def message_to_json(msg: Message) -> dict[str, Any]:
    """A JSON-ready dict of one message."""
    out: dict[str, Any] = {"type": message_name(msg)}
    for field in msg._fields:
        v = getattr(msg, field)
        if field == "initiator":
            out[field] = _address_text(v)
        elif field == "objective":
            out[field] = None if v is None else objective_to_json(v)
        elif field == "objectives":
            out[field] = [{"objective": objective_to_json(t.objective),
                           "locator": None if t.locator is None else locator_to_json(t.locator)}
                          for t in v]
        elif field == "locators":
            out[field] = [locator_to_json(loc) for loc in v]
        elif field == "content":
            if v is not ABSENT:
                out[field] = value_to_json(v)
        else:
            out[field] = v
    return out


def decode_hex_to_json(text: str, max_size: int = c.DEFAULT_TCP_MAX_SIZE) -> dict[str, Any]:
    """Hex text (spaces, newlines, ``0x`` or ``h'…'`` wrapping allowed) → message JSON.

    Raises GraspDecodeError with a one-line reason for bad hex or a bad message.
    """
    cleaned = "".join(text.split())
    if cleaned.startswith(("h'", 'h"')) and cleaned[-1:] in ("'", '"'):
        cleaned = cleaned[2:-1]
    elif cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    if not cleaned:
        raise GraspDecodeError("no hex digits given")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        raise GraspDecodeError(
            "input is not hexadecimal (an even number of 0-9a-f digits)") from None
    return message_to_json(decode(data, max_size=max_size))

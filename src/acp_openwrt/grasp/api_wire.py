"""The local GRASP API's message format, shared by api_server.py and client.py.

Framing: back-to-back CBOR items on a Unix stream socket (no length prefix; the same framer as
GRASP over TCP), each at most ``MAX_MESSAGE`` bytes. A request is ``{"id": uint, "op": text,
"args": map}``; its reply is ``{"id": same, "result": any}`` or ``{"id": same, "error": uint
(RFC 8991 code), "reason": text}``. Objectives and locators travel in their GRASP wire shapes:
``[name, flags, loop-count, ?value]`` and ``[option, address, protocol, port]``.
"""
from __future__ import annotations

from typing import Any

from .actions import NegotiationRequested
from .asa_api import NegotiationReply
from .codec import GraspDecodeError, _locator, _objective, locator_to_cbor, objective_to_cbor
from .flood_cache import FloodEntry
from .messages import Locator, Objective

MAX_MESSAGE = 65535


def objective_in(x: Any) -> Objective:
    return _objective(x, False)[0]


def locator_in(x: Any) -> Locator | None:
    if x is None or x == []:
        return None
    return _locator(x)[0]


def objective_out(o: Objective | None) -> Any:
    return None if o is None else objective_to_cbor(o)


def locator_out(loc: Locator | None) -> Any:
    return locator_to_cbor(loc)


def reply_out(r: NegotiationReply) -> dict[str, Any]:
    return {"handle": r.handle, "objective": objective_out(r.objective), "reason": r.reason}


def reply_in(x: Any) -> NegotiationReply:
    obj = x.get("objective")
    return NegotiationReply(x.get("handle"), None if obj is None else objective_in(obj),
                            x.get("reason"))


def request_out(r: NegotiationRequested) -> dict[str, Any]:
    return {"handle": r.handle, "objective": objective_out(r.objective), "peer": r.peer}


def request_in(x: Any) -> NegotiationRequested:
    return NegotiationRequested(x["handle"], objective_in(x["objective"]), x["peer"])


def flood_entry_out(e: FloodEntry, now: float) -> dict[str, Any]:
    remaining = None if e.expires == float("inf") else max(0, int((e.expires - now) * 1000))
    return {"objective": objective_out(e.objective), "locator": locator_out(e.locator),
            "initiator": e.initiator, "ifname": e.ifname, "ttl_ms": remaining}


def flood_entry_in(x: Any, now: float) -> FloodEntry:
    ttl = x.get("ttl_ms")
    expires = float("inf") if ttl is None else now + ttl / 1000.0
    return FloodEntry(objective_in(x["objective"]), locator_in(x.get("locator")), x["initiator"],
                      x["ifname"], expires, now)


__all__ = ["GraspDecodeError", "MAX_MESSAGE", "objective_in", "objective_out", "locator_in",
           "locator_out", "reply_in", "reply_out", "request_in", "request_out", "flood_entry_in",
           "flood_entry_out"]

"""What the engine hands out: transport actions for the I/O edge, events for ASAs.

Transport actions (the asyncio edge performs them in order):
  SendMulticast(ifname, data)         UDP to ff02::13:7017 on ifname (or, in the ACP, a copy to
                                      every link-local neighbour connection on ifname)
  OpenStream(conn_id, ifname, address, port)   TCP connect; the engine picked conn_id
  SendStream(conn_id, data)           one message on that connection
  CloseStream(conn_id)                close it (after sending what is queued)
Events for ASAs (the API layer routes them by handle):
  FloodReceived, DiscoveryHeard (DULL only), Discovered, NegotiationRequested, NegotiationStep,
  NegotiationEnded, SynchronizationRequested (informative), SynchronizationDone
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .messages import Locator, Objective


class SendMulticast(NamedTuple):
    ifname: str
    data: bytes


class OpenStream(NamedTuple):
    conn_id: int
    ifname: str | None  # needed for link-local addresses
    address: bytes
    port: int


class SendStream(NamedTuple):
    conn_id: int
    data: bytes


class CloseStream(NamedTuple):
    conn_id: int


class FloodReceived(NamedTuple):
    ifname: str
    initiator: bytes
    objective: Objective
    locator: Locator | None
    expires: float
    source: bytes = b""  # the transport source (the neighbour's link-local address)
    ttl_ms: int = 0


class DiscoveryHeard(NamedTuple):
    """DULL only: a neighbour's link-local M_DISCOVERY (loop count 1) for ``objective``. DULL
    has no unicast, so nothing answers it with M_RESPONSE; a subscriber may flood at once
    (a join proxy answers a pledge's solicitation with its AN_Proxy flood)."""
    ifname: str
    source: bytes       # the neighbour's link-local address (the transport source)
    objective: Objective


class Discovered(NamedTuple):
    """End of a discover() call: every locator that arrived in time (may be empty)."""
    handle: int
    name: str
    locators: tuple[Locator, ...]


class NegotiationRequested(NamedTuple):
    """A peer sent M_REQ_NEG for an objective we listen on; answer with negotiate_step,
    negotiate_wait or end_negotiate."""
    handle: int
    objective: Objective
    peer: bytes


class NegotiationStep(NamedTuple):
    """The peer's counter-offer (M_NEGOTIATE); loop_count is what our next step will carry."""
    handle: int
    objective: Objective


class NegotiationEnded(NamedTuple):
    """accept True/False from the peer's M_END, or False with ``error`` (an RFC 8991 code)."""
    handle: int
    accept: bool
    reason: str | None
    error: int
    objective: Objective | None


class SynchronizationDone(NamedTuple):
    handle: int
    objective: Objective | None
    error: int


Action = SendMulticast | OpenStream | SendStream | CloseStream
Event = (FloodReceived | Discovered | NegotiationRequested | NegotiationStep | NegotiationEnded
         | SynchronizationDone)
Output = Action | Event | Any

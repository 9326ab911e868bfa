"""GRASP messages, options and objectives as plain immutable values (RFC 8990 §2.8-§2.10).

NamedTuples rather than dataclasses: they are built for every received datagram, and a tuple
costs a fraction of a dataclass to construct. ``ABSENT`` marks an objective without a value,
which the wire distinguishes from a CBOR null (``[name, flags, loop]`` vs ``[name, flags, loop,
null]``), so decode-then-encode gives the same bytes.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import constants as c


class _Absent:
    """The objective carries no value element at all."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def is_link_local(addr: bytes) -> bool:
    """fe80::/10, or 169.254/16 for a 4-byte address."""
    if len(addr) == 16:
        return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80
    return len(addr) == 4 and addr[0] == 169 and addr[1] == 254


def ip_address(raw: bytes) -> Any:
    """A 16- or 4-byte wire address as an ``ipaddress`` object (imported on first use)."""
    import ipaddress

    if len(raw) == 16:
        return ipaddress.IPv6Address(raw)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    raise ValueError("an address is 16 or 4 bytes")


class Objective(NamedTuple):
    """``[objective-name, objective-flags, loop-count, ?objective-value]`` (§2.10)."""

    name: str
    flags: int
    loop_count: int = c.GRASP_DEF_LOOPCT
    value: Any = ABSENT

    @property
    def neg(self) -> bool:
        return bool(self.flags & c.F_NEG)

    @property
    def synch(self) -> bool:
        return bool(self.flags & c.F_SYNCH)

    @property
    def disc(self) -> bool:
        return bool(self.flags & c.F_DISC)

    @property
    def dry(self) -> bool:
        return bool(self.flags & c.F_NEG_DRY)

    def with_loop_count(self, loop_count: int) -> Objective:
        return Objective(self.name, self.flags, loop_count, self.value)

    def with_value(self, value: Any) -> Objective:
        return Objective(self.name, self.flags, self.loop_count, value)


class Locator(NamedTuple):
    """A locator option (§2.9.5): kind is O_IPv6_LOCATOR … O_URI_LOCATOR.

    ``address`` is bytes (16 or 4) for IP locators, text for FQDN and URI locators.
    ``protocol`` and ``port`` may be None only in a URI locator.
    """

    kind: int
    address: bytes | str
    protocol: int | None
    port: int | None

    def ip_address(self) -> Any:
        """The address as an ``ipaddress`` object (IP locators only), imported on demand."""
        address = self.address
        if self.kind not in (c.O_IPv6_LOCATOR, c.O_IPv4_LOCATOR) or not isinstance(address, bytes):
            raise ValueError("not an IP locator")
        return ip_address(address)


class TaggedObjective(NamedTuple):
    """One ``[objective, locator-option / []]`` pair of an M_FLOOD; locator None is ``[]``."""

    objective: Objective
    locator: Locator | None = None


class Noop(NamedTuple):
    """``[M_NOOP]``."""


class Discovery(NamedTuple):
    """``[M_DISCOVERY, session-id, initiator, objective]``."""

    session_id: int
    initiator: bytes
    objective: Objective


class Response(NamedTuple):
    """``[M_RESPONSE, session-id, initiator, ttl, (+locator // divert), ?objective]``.

    ``diverted`` True means the locators sit inside one O_DIVERT option.
    """

    session_id: int
    initiator: bytes
    ttl: int
    locators: tuple[Locator, ...]
    diverted: bool = False
    objective: Objective | None = None


class RequestNegotiation(NamedTuple):
    """``[M_REQ_NEG, session-id, objective]``."""

    session_id: int
    objective: Objective


class RequestSynchronization(NamedTuple):
    """``[M_REQ_SYN, session-id, objective]``."""

    session_id: int
    objective: Objective


class Negotiate(NamedTuple):
    """``[M_NEGOTIATE, session-id, objective]``."""

    session_id: int
    objective: Objective


class End(NamedTuple):
    """``[M_END, session-id, [O_ACCEPT] / [O_DECLINE, ?reason]]``."""

    session_id: int
    accept: bool
    reason: str | None = None


class Wait(NamedTuple):
    """``[M_WAIT, session-id, waiting-time]`` (ms)."""

    session_id: int
    waiting_time: int


class Synch(NamedTuple):
    """``[M_SYNCH, session-id, objective]``."""

    session_id: int
    objective: Objective


class Flood(NamedTuple):
    """``[M_FLOOD, session-id, initiator, ttl, +[objective, (locator-option / [])]]``."""

    session_id: int
    initiator: bytes
    ttl: int
    objectives: tuple[TaggedObjective, ...]


class Invalid(NamedTuple):
    """``[M_INVALID, session-id, ?any]``."""

    session_id: int
    content: Any = ABSENT


Message = (Noop | Discovery | Response | RequestNegotiation | RequestSynchronization
           | Negotiate | End | Wait | Synch | Flood | Invalid)

# The message type of each class. A module-level table rather than a class attribute: a
# NamedTuple cannot carry a ClassVar that type checkers accept, and the codec dispatches on
# the class itself (type(msg) is X), so the number is needed only for encoding and names.
MTYPE: dict[type[Message], int] = {
    Noop: c.M_NOOP, Discovery: c.M_DISCOVERY, Response: c.M_RESPONSE,
    RequestNegotiation: c.M_REQ_NEG, RequestSynchronization: c.M_REQ_SYN,
    Negotiate: c.M_NEGOTIATE, End: c.M_END, Wait: c.M_WAIT, Synch: c.M_SYNCH,
    Flood: c.M_FLOOD, Invalid: c.M_INVALID,
}


def message_name(msg: Message) -> str:
    """``M_FLOOD`` etc. (for logs, counters and the JSON view)."""
    return c.MESSAGE_NAMES[MTYPE[type(msg)]]

"""Router Advertisements for an ACP connect subnet, sans I/O (RFC 4861, RFC 4191, RFC 8994 §8.1.3).

`build_ra()` gives the ICMPv6 message (checksum left 0: the kernel fills it on a raw ICMPv6
socket); `parse_rs()` checks a Router Solicitation; `parse_ra()` reads an RA back (tests, tools).
`RaSchedule` says when to send: at once, then the first three at most 16 s apart, then every
MinRtrAdvInterval..MaxRtrAdvInterval, and soon after a solicitation but never closer than
MIN_DELAY_BETWEEN_RAS to the previous one (RFC 4861 §6.2.4, §6.2.6). Time is passed in.

What the RA says (§8.1.3): the connect subnet in a Prefix Information option (A flag only for a
/64, since SLAAC needs 64-bit interface identifiers), a Route Information option for each ACP
aggregate (the ULA /48) with a normal lifetime, and a Route Information option for ::/0 with
lifetime 0, so RFC 4191 ("type C") hosts send only ACP traffic here and keep their other default
router. The RA header's router lifetime stays non-zero so that hosts ignoring RIOs (types A and
B) still reach the ACP. `default_router=True` leaves out the ::/0 RIO, for devices whose only
network is the connect link (Linux with the default accept_ra_rt_info_max_plen=0 processes the
::/0 RIO but ignores the /48 one, and would otherwise have no route into the ACP).
"""
from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
OPT_SOURCE_LLADDR = 1
OPT_PREFIX_INFO = 3
OPT_MTU = 5
OPT_ROUTE_INFO = 24
PIO_ONLINK = 0x80
PIO_AUTONOMOUS = 0x40
CUR_HOP_LIMIT = 64
# RFC 4861 §6.2.1 defaults (MaxRtrAdvInterval 600 s) and §10 constants
MAX_RTR_ADV_INTERVAL = 600.0
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MAX_RA_DELAY_TIME = 0.5
VALID_LIFETIME = 2592000       # AdvValidLifetime: 30 days
PREFERRED_LIFETIME = 604800    # AdvPreferredLifetime: 7 days
DEFAULT_ROUTE = ipaddress.IPv6Network("::/0")


class NdError(ValueError):
    """A malformed Neighbor Discovery message."""


@dataclass(frozen=True)
class RaContent:
    """What an RA announces on one connect subnet."""
    subnet: ipaddress.IPv6Network
    routes: tuple[ipaddress.IPv6Network, ...]       # ACP aggregates for RIOs (the ULA /48s)
    source_mac: bytes | None = None
    router_lifetime: int = int(3 * MAX_RTR_ADV_INTERVAL)
    route_lifetime: int = int(3 * MAX_RTR_ADV_INTERVAL)
    default_router: bool = False
    mtu: int | None = None

    def final(self) -> RaContent:
        """The last RA when the interface stops advertising (§6.2.5): router lifetime 0, RIOs
        and the prefix's preferred lifetime 0 (hosts keep a valid address at least 2 h anyway)."""
        return RaContent(self.subnet, self.routes, self.source_mac, 0, 0, self.default_router,
                         self.mtu)


def _rio(prefix: ipaddress.IPv6Network, lifetime: int) -> bytes:
    """RFC 4191 §2.3: length 1, 2 or 3 units as the prefix needs; preference medium (00)."""
    size = 0 if prefix.prefixlen == 0 else 8 if prefix.prefixlen <= 64 else 16
    head = struct.pack("!BBBBI", OPT_ROUTE_INFO, 1 + size // 8, prefix.prefixlen, 0, lifetime)
    return head + prefix.network_address.packed[:size]


def build_ra(content: RaContent, final: bool = False) -> bytes:
    """The RA message: ICMPv6 header (checksum 0) and options."""
    c = content.final() if final else content
    out = bytearray(struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, CUR_HOP_LIMIT, 0,
                                c.router_lifetime, 0, 0))
    if c.source_mac is not None:
        if len(c.source_mac) != 6:
            raise ValueError("source link-layer address must be 6 octets (Ethernet)")
        out += struct.pack("!BB", OPT_SOURCE_LLADDR, 1) + c.source_mac
    if c.mtu is not None:
        out += struct.pack("!BBHI", OPT_MTU, 1, 0, c.mtu)
    flags = PIO_ONLINK | (PIO_AUTONOMOUS if c.subnet.prefixlen == 64 else 0)
    preferred = 0 if final else PREFERRED_LIFETIME
    out += struct.pack("!BBBBIII", OPT_PREFIX_INFO, 4, c.subnet.prefixlen, flags,
                       VALID_LIFETIME, preferred, 0) + c.subnet.network_address.packed
    for route in c.routes:
        out += _rio(route, c.route_lifetime)
    if not c.default_router:
        out += _rio(DEFAULT_ROUTE, 0)
    return bytes(out)


def _options(data: bytes, start: int) -> list[tuple[int, bytes]]:
    """(type, whole option) pairs; NdError on a zero length or one running past the end."""
    out = []
    pos = start
    while pos < len(data):
        if pos + 2 > len(data):
            raise NdError("truncated option header")
        kind, units = data[pos], data[pos + 1]
        if units == 0:
            raise NdError("option with length 0")
        end = pos + units * 8
        if end > len(data):
            raise NdError("option runs past the end of the message")
        out.append((kind, data[pos:end]))
        pos = end
    return out


@dataclass(frozen=True)
class RouterSolicitation:
    source_mac: bytes | None


def parse_rs(data: bytes, source: ipaddress.IPv6Address) -> RouterSolicitation:
    """RFC 4861 §6.1.1 checks that need no IP header (hop limit 255 is the caller's check)."""
    if len(data) < 8 or data[0] != ND_ROUTER_SOLICIT:
        raise NdError("not a Router Solicitation")
    if data[1] != 0:
        raise NdError(f"Router Solicitation with code {data[1]}")
    mac = None
    for kind, option in _options(data, 8):
        if kind == OPT_SOURCE_LLADDR:
            mac = option[2:8]
    if mac is not None and source.is_unspecified:
        raise NdError("source link-layer address option from the unspecified address")
    return RouterSolicitation(mac)


@dataclass
class ParsedRa:
    router_lifetime: int
    prefixes: list[tuple[ipaddress.IPv6Network, int, int, int]] = field(default_factory=list)
    routes: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    source_mac: bytes | None = None
    mtu: int | None = None


def parse_ra(data: bytes) -> ParsedRa:
    """An RA's header and the options build_ra writes: prefixes are (net, flags, valid,
    preferred), routes (net, lifetime)."""
    if len(data) < 16 or data[0] != ND_ROUTER_ADVERT or data[1] != 0:
        raise NdError("not a Router Advertisement")
    ra = ParsedRa(struct.unpack_from("!H", data, 6)[0])
    for kind, option in _options(data, 16):
        if kind == OPT_SOURCE_LLADDR:
            ra.source_mac = option[2:8]
        elif kind == OPT_MTU and len(option) == 8:
            ra.mtu = struct.unpack_from("!I", option, 4)[0]
        elif kind == OPT_PREFIX_INFO:
            if len(option) != 32 or option[2] > 128:
                raise NdError("bad Prefix Information option")
            valid, preferred = struct.unpack_from("!II", option, 4)
            net = ipaddress.IPv6Network((option[16:32], option[2]), strict=False)
            ra.prefixes.append((net, option[3], valid, preferred))
        elif kind == OPT_ROUTE_INFO:
            length = option[2]
            if length > 128 or len(option) < 8 + (0 if length == 0 else 8 if length <= 64 else 16):
                raise NdError("bad Route Information option")
            raw = option[8:24].ljust(16, b"\0")
            net = ipaddress.IPv6Network((raw, length), strict=False)
            ra.routes.append((net, struct.unpack_from("!I", option, 4)[0]))
    return ra


class RaSchedule:
    """When to send the next unsolicited or solicited RA on one interface."""

    def __init__(self, now: float, max_interval: float = MAX_RTR_ADV_INTERVAL,
                 min_interval: float | None = None, rng: random.Random | None = None,
                 min_delay_between: float = MIN_DELAY_BETWEEN_RAS,
                 max_response_delay: float = MAX_RA_DELAY_TIME) -> None:
        self.max_interval = max_interval
        self.min_interval = min_interval if min_interval is not None else max_interval / 3
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self.min_delay_between = min_delay_between
        self.max_response_delay = max_response_delay
        self._rng = rng or random.Random()
        self._next = now             # the first RA goes out at once
        self._last: float | None = None
        self.sent = 0
        self.solicitations = 0

    def next_time(self) -> float:
        return self._next

    def solicited(self, now: float) -> None:
        """An RS arrived: answer after a random delay, rate-limited (§6.2.6)."""
        self.solicitations += 1
        when = now + self._rng.uniform(0, self.max_response_delay)
        if self._last is not None:
            when = max(when, self._last + self.min_delay_between)
        self._next = min(self._next, when)

    def poll(self, now: float) -> bool:
        """True if an RA is due now; the next time is then set."""
        if now < self._next:
            return False
        self._last = now
        self.sent += 1
        interval = self._rng.uniform(self.min_interval, self.max_interval)
        if self.sent < MAX_INITIAL_RTR_ADVERTISEMENTS:  # the first three: at most 16 s apart
            interval = min(interval, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        self._next = now + interval
        return True

"""RPL control message options (RFC 6550 §6.7): those the ACP profile uses, strictly parsed.

Options the profile does not use, and options not allowed in the carrying message, are skipped
and counted (§6.7.1: unknown options MUST be ignored); a malformed option we parse is an error.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from . import constants as c


class RplDecodeError(ValueError):
    """Bytes that are not an acceptable RPL message for this node; the message is dropped."""


@dataclass(frozen=True)
class PadN:
    """PadN with n >= 2 octets in total (Pad1 is never kept: it only aligns)."""
    length: int = 2


@dataclass(frozen=True)
class DodagConfiguration:
    """DODAG Configuration (§6.7.6): set by the root, copied unchanged by everyone else."""
    dio_interval_doublings: int = c.ACP_DIO_INTERVAL_DOUBLINGS
    dio_interval_min: int = c.ACP_DIO_INTERVAL_MIN
    dio_redundancy: int = c.ACP_DIO_REDUNDANCY
    max_rank_increase: int = c.ACP_MAX_RANK_INCREASE
    min_hop_rank_increase: int = c.DEFAULT_MIN_HOP_RANK_INCREASE
    ocp: int = c.OCP_OF0
    default_lifetime: int = c.ACP_DEFAULT_LIFETIME
    lifetime_unit: int = c.ACP_LIFETIME_UNIT
    path_control_size: int = c.DEFAULT_PATH_CONTROL_SIZE

    @property
    def imin(self) -> float:
        """Trickle Imin in seconds (2^DIOIntervalMin ms)."""
        return (1 << self.dio_interval_min) / 1000.0

    def lifetime_seconds(self, lifetime: int) -> float | None:
        """A Path/Default Lifetime in seconds; None means infinite."""
        return None if lifetime == c.INFINITE_LIFETIME else float(lifetime * self.lifetime_unit)


# What a DODAG runs on when its DIOs carry no DODAG Configuration option (RFC 6550 §6.7.6: it "MAY
# be present"; unstrung never sends one). RFC 6550 gives defaults for PCS, the three Trickle fields
# and MinHopRankIncrease (§6.7.6, §17, §18.2.8) and none for the other four, chosen here:
RFC6550_DEFAULTS = DodagConfiguration(
    dio_interval_doublings=c.DEFAULT_DIO_INTERVAL_DOUBLINGS,   # 20: Imax ~2.3 h
    dio_interval_min=c.DEFAULT_DIO_INTERVAL_MIN,               # 3: Imin 8 ms
    dio_redundancy=c.DEFAULT_DIO_REDUNDANCY_CONSTANT,          # 10
    # No default. 0 disables rank growth for local repair (§6.7.6): a node detaches instead.
    max_rank_increase=0,
    min_hop_rank_increase=c.DEFAULT_MIN_HOP_RANK_INCREASE,     # 256
    # No default. OF0 is "designed as a default OF" (RFC 6552 §1) and RFC 8994's only OF.
    ocp=c.OCP_OF0,
    # No default. Infinite (as Contiki's and the digest's E.9): a finite guess would silently drop
    # the routes of members that never refresh (sunshine); a channel or link going down, or a
    # No-Path, still removes them.
    default_lifetime=c.INFINITE_LIFETIME,
    lifetime_unit=0xFFFF,
    path_control_size=c.DEFAULT_PATH_CONTROL_SIZE)


@dataclass(frozen=True)
class PrefixInformation:
    """Prefix Information (§6.7.10); not used by the ACP but decoded for completeness."""
    prefix: ipaddress.IPv6Network
    on_link: bool = False
    autonomous: bool = False
    router_address: bool = False
    valid_lifetime: int = 0
    preferred_lifetime: int = 0


@dataclass(frozen=True)
class RplTarget:
    """RPL Target (§6.7.7): an address or prefix reachable through the DAO's sender."""
    prefix: ipaddress.IPv6Network


@dataclass(frozen=True)
class TransitInformation:
    """Transit Information (§6.7.8); storing mode omits the parent address."""
    path_sequence: int
    path_lifetime: int
    path_control: int = 0
    external: bool = False
    parent: ipaddress.IPv6Address | None = None


@dataclass(frozen=True)
class SolicitedInformation:
    """Solicited Information (§6.7.9): DIS predicates; None means the predicate is not checked."""
    instance_id: int | None = None
    dodag_id: ipaddress.IPv6Address | None = None
    version: int | None = None


Option = PadN | DodagConfiguration | PrefixInformation | RplTarget | TransitInformation | \
    SolicitedInformation

_FIXED_LENGTH = {
    c.OPT_DODAG_CONFIGURATION: 14,
    c.OPT_SOLICITED_INFORMATION: 19,
    c.OPT_PREFIX_INFORMATION: 30,
}


def _prefix(plen: int, raw: bytes, what: str) -> ipaddress.IPv6Network:
    if plen > 128:
        raise RplDecodeError(f"{what} prefix length {plen} > 128")
    value = int.from_bytes(raw.ljust(16, b"\0"), "big")
    if plen < 128:
        value &= ~((1 << (128 - plen)) - 1) & ((1 << 128) - 1)  # bits past the length are ignored
    return ipaddress.IPv6Network((value, plen))


def _decode_one(otype: int, data: bytes) -> Option | None:
    expected = _FIXED_LENGTH.get(otype)
    if expected is not None and len(data) != expected:
        raise RplDecodeError(f"option 0x{otype:02x} length {len(data)}, expected {expected}")
    if otype == c.OPT_PADN:
        if len(data) > 5:
            raise RplDecodeError(f"PadN length {len(data)} > 5")
        return None
    if otype == c.OPT_DODAG_CONFIGURATION:
        flags, doublings, imin, red, maxinc, minhop, ocp, _res, deflife, unit = \
            struct.unpack("!BBBBHHHBBH", data)
        if flags & 0x08:
            raise RplDecodeError("DODAG configuration with authentication (A) set")
        if minhop == 0:
            raise RplDecodeError("MinHopRankIncrease 0")
        if imin > 31 or doublings > 31:
            raise RplDecodeError("DIO interval out of range")
        return DodagConfiguration(doublings, imin, red, maxinc, minhop, ocp, deflife, unit,
                                  flags & 0x07)
    if otype == c.OPT_PREFIX_INFORMATION:
        plen, flags, valid, preferred, _res = struct.unpack("!BBIII", data[:14])
        return PrefixInformation(_prefix(plen, data[14:], "PIO"), bool(flags & 0x80),
                                 bool(flags & 0x40), bool(flags & 0x20), valid, preferred)
    if otype == c.OPT_RPL_TARGET:
        if len(data) < 2:
            raise RplDecodeError("RPL target shorter than 2 octets")
        plen = data[1]
        raw = data[2:]
        if len(raw) > 16 or plen > 128 or len(raw) < (plen + 7) // 8:
            raise RplDecodeError(f"RPL target: {len(raw)} octets for prefix length {plen}")
        return RplTarget(_prefix(plen, raw, "target"))
    if otype == c.OPT_TRANSIT_INFORMATION:
        if len(data) not in (4, 20):
            raise RplDecodeError(f"transit information length {len(data)}, expected 4 or 20")
        flags, control, seq, lifetime = data[:4]
        parent = ipaddress.IPv6Address(data[4:]) if len(data) == 20 else None
        return TransitInformation(seq, lifetime, control, bool(flags & 0x80), parent)
    if otype == c.OPT_SOLICITED_INFORMATION:
        instance, flags = data[0], data[1]
        version = data[18]
        return SolicitedInformation(instance if flags & 0x40 else None,
                                    ipaddress.IPv6Address(data[2:18]) if flags & 0x20 else None,
                                    version if flags & 0x80 else None)
    raise AssertionError(otype)  # pragma: no cover - callers pass only parsed types


_PARSED = frozenset({c.OPT_PADN, c.OPT_DODAG_CONFIGURATION, c.OPT_PREFIX_INFORMATION,
                     c.OPT_RPL_TARGET, c.OPT_TRANSIT_INFORMATION, c.OPT_SOLICITED_INFORMATION})


def decode_options(data: bytes, allowed: frozenset[int]) -> tuple[tuple[Option, ...], int]:
    """Parse an option area: the options kept (in order) and how many were skipped."""
    options: list[Option] = []
    skipped = 0
    pos = 0
    end = len(data)
    while pos < end:
        otype = data[pos]
        if otype == c.OPT_PAD1:
            pos += 1
            continue
        if pos + 2 > end:
            raise RplDecodeError(f"option 0x{otype:02x} truncated at offset {pos}")
        olen = data[pos + 1]
        if pos + 2 + olen > end:
            raise RplDecodeError(f"option 0x{otype:02x} length {olen} runs past the end")
        body = data[pos + 2:pos + 2 + olen]
        pos += 2 + olen
        if otype == c.OPT_PADN or (otype in _PARSED and otype in allowed):
            option = _decode_one(otype, body)
            if option is not None:
                options.append(option)
        else:
            skipped += 1
    return tuple(options), skipped


def _target_bytes(prefix: ipaddress.IPv6Network) -> bytes:
    return prefix.network_address.packed[:(prefix.prefixlen + 7) // 8]


def encode_option(option: Option) -> bytes:
    """One option with its type and length octets."""
    if isinstance(option, PadN):
        if not 2 <= option.length <= 7:
            raise ValueError(f"PadN covers 2..7 octets, not {option.length}")
        return bytes([c.OPT_PADN, option.length - 2]) + bytes(option.length - 2)
    if isinstance(option, DodagConfiguration):
        return bytes([c.OPT_DODAG_CONFIGURATION, 14]) + struct.pack(
            "!BBBBHHHBBH", option.path_control_size & 0x07, option.dio_interval_doublings,
            option.dio_interval_min, option.dio_redundancy, option.max_rank_increase,
            option.min_hop_rank_increase, option.ocp, 0, option.default_lifetime,
            option.lifetime_unit)
    if isinstance(option, PrefixInformation):
        flags = option.on_link << 7 | option.autonomous << 6 | option.router_address << 5
        return bytes([c.OPT_PREFIX_INFORMATION, 30]) + struct.pack(
            "!BBIII", option.prefix.prefixlen, flags, option.valid_lifetime,
            option.preferred_lifetime, 0) + option.prefix.network_address.packed
    if isinstance(option, RplTarget):
        raw = _target_bytes(option.prefix)
        return bytes([c.OPT_RPL_TARGET, 2 + len(raw), 0, option.prefix.prefixlen]) + raw
    if isinstance(option, TransitInformation):
        parent = option.parent.packed if option.parent is not None else b""
        return bytes([c.OPT_TRANSIT_INFORMATION, 4 + len(parent), option.external << 7,
                      option.path_control, option.path_sequence, option.path_lifetime]) + parent
    if isinstance(option, SolicitedInformation):
        flags = ((option.version is not None) << 7 | (option.instance_id is not None) << 6
                 | (option.dodag_id is not None) << 5)
        dodag = option.dodag_id.packed if option.dodag_id is not None else bytes(16)
        return bytes([c.OPT_SOLICITED_INFORMATION, 19, option.instance_id or 0, flags]) + dodag \
            + bytes([option.version or 0])
    raise TypeError(f"not an RPL option: {option!r}")


def encode_options(options: tuple[Option, ...] | list[Option]) -> bytes:
    return b"".join(encode_option(option) for option in options)

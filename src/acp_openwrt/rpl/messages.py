"""RPL control messages (RFC 6550 §6.2-6.5): DIS, DIO, DAO, DAO-ACK bodies after the ICMPv6 header.

`decode_message(code, body)` raises only RplDecodeError, whatever the bytes; the raw socket's kernel
checks the ICMPv6 checksum, so the codec handles code, base object and options.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from . import constants as c
from .options import (
    DodagConfiguration,
    Option,
    PrefixInformation,
    RplDecodeError,
    RplTarget,
    SolicitedInformation,
    TransitInformation,
    decode_options,
    encode_options,
)


@dataclass(frozen=True)
class Dis:
    """DODAG Information Solicitation."""
    options: tuple[Option, ...] = ()
    skipped: int = field(default=0, compare=False)
    code = c.CODE_DIS

    @property
    def solicited(self) -> SolicitedInformation | None:
        return next((o for o in self.options if isinstance(o, SolicitedInformation)), None)


@dataclass(frozen=True)
class Dio:
    """DODAG Information Object."""
    instance_id: int
    version: int
    rank: int
    dodag_id: ipaddress.IPv6Address
    grounded: bool = True
    mop: int = c.MOP_STORING_NO_MULTICAST
    preference: int = 0
    dtsn: int = 240
    options: tuple[Option, ...] = ()
    skipped: int = field(default=0, compare=False)
    code = c.CODE_DIO

    @property
    def configuration(self) -> DodagConfiguration | None:
        return next((o for o in self.options if isinstance(o, DodagConfiguration)), None)

    @property
    def prefixes(self) -> tuple[PrefixInformation, ...]:
        return tuple(o for o in self.options if isinstance(o, PrefixInformation))


@dataclass(frozen=True)
class Dao:
    """Destination Advertisement Object; targets and transits in order (§9.4)."""
    instance_id: int
    sequence: int
    ack_requested: bool = False
    dodag_id: ipaddress.IPv6Address | None = None
    options: tuple[Option, ...] = ()
    skipped: int = field(default=0, compare=False)
    code = c.CODE_DAO

    def groups(self) -> list[tuple[tuple[RplTarget, ...], tuple[TransitInformation, ...]]]:
        """Targets with the Transit options that follow them. A last group may have none: §9.4
        rule 3 wants them, §6.7.8 says "MAY be present", and unstrung sends none."""
        result: list[tuple[tuple[RplTarget, ...], tuple[TransitInformation, ...]]] = []
        targets: list[RplTarget] = []
        transits: list[TransitInformation] = []
        for option in self.options:
            if isinstance(option, RplTarget):
                if transits:
                    result.append((tuple(targets), tuple(transits)))
                    targets, transits = [], []
                targets.append(option)
            elif isinstance(option, TransitInformation):
                transits.append(option)
        if targets:
            result.append((tuple(targets), tuple(transits)))
        return result


@dataclass(frozen=True)
class DaoAck:
    """DAO acknowledgement; status 0 accepts, 128-255 reject."""
    instance_id: int
    sequence: int
    status: int = c.DAO_ACK_ACCEPT
    dodag_id: ipaddress.IPv6Address | None = None
    skipped: int = field(default=0, compare=False)
    code = c.CODE_DAO_ACK


Message = Dis | Dio | Dao | DaoAck

_DIS_OPTIONS = frozenset({c.OPT_SOLICITED_INFORMATION})
_DIO_OPTIONS = frozenset({c.OPT_DODAG_CONFIGURATION, c.OPT_PREFIX_INFORMATION})
_DAO_OPTIONS = frozenset({c.OPT_RPL_TARGET, c.OPT_TRANSIT_INFORMATION})


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise RplDecodeError(f"{what} truncated: {len(body)} octets, need {size}")


def _decode_dio(body: bytes) -> Dio:
    _need(body, 24, "DIO")
    instance, version, rank, gmp, dtsn = struct.unpack("!BBHBB", body[:6])
    mop = (gmp >> 3) & 0x07  # any MOP decodes; which ones a node joins is the engine's choice
    options, skipped = decode_options(body[24:], _DIO_OPTIONS)
    return Dio(instance, version, rank, ipaddress.IPv6Address(body[8:24]), bool(gmp & 0x80), mop,
               gmp & 0x07, dtsn, options, skipped)


def _decode_dao(body: bytes) -> Dao:
    _need(body, 4, "DAO")
    instance, flags, _res, seq = body[:4]
    dodag_id = None
    offset = 4
    if flags & 0x40:
        _need(body, 20, "DAO with DODAGID")
        dodag_id = ipaddress.IPv6Address(body[4:20])
        offset = 20
    elif instance & 0x80:
        raise RplDecodeError("DAO for a local instance without DODAGID")
    options, skipped = decode_options(body[offset:], _DAO_OPTIONS)
    seen_target = False
    for option in options:
        if isinstance(option, RplTarget):
            seen_target = True
        elif isinstance(option, TransitInformation) and not seen_target:
            raise RplDecodeError("DAO transit information before any target")
    return Dao(instance, seq, bool(flags & 0x80), dodag_id, options, skipped)


def _decode_dao_ack(body: bytes) -> DaoAck:
    _need(body, 4, "DAO-ACK")
    instance, flags, seq, status = body[:4]
    dodag_id = None
    offset = 4
    if flags & 0x80:
        _need(body, 20, "DAO-ACK with DODAGID")
        dodag_id = ipaddress.IPv6Address(body[4:20])
        offset = 20
    elif instance & 0x80:
        raise RplDecodeError("DAO-ACK for a local instance without DODAGID")
    _options, skipped = decode_options(body[offset:], frozenset())
    return DaoAck(instance, seq, status, dodag_id, skipped)


def decode_message(code: int, body: bytes) -> Message:
    """Decode a type-155 body for a given ICMPv6 code; RplDecodeError on anything unacceptable."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise RplDecodeError("body is not bytes")
    body = bytes(body)
    if code in c.SECURE_CODES:
        raise RplDecodeError(f"secure RPL code 0x{code:02x} not supported")
    if code == c.CODE_DIS:
        _need(body, 2, "DIS")
        options, skipped = decode_options(body[2:], _DIS_OPTIONS)
        return Dis(options, skipped)
    if code == c.CODE_DIO:
        return _decode_dio(body)
    if code == c.CODE_DAO:
        return _decode_dao(body)
    if code == c.CODE_DAO_ACK:
        return _decode_dao_ack(body)
    raise RplDecodeError(f"unknown RPL code 0x{code:02x}" if isinstance(code, int)
                         else "code is not an integer")


def decode_packet(packet: bytes) -> Message:
    """Decode a whole ICMPv6 message as a raw socket returns it (type, code, checksum, body)."""
    if len(packet) < 4:
        raise RplDecodeError(f"ICMPv6 message truncated: {len(packet)} octets")
    if packet[0] != c.ICMPV6_TYPE_RPL:
        raise RplDecodeError(f"ICMPv6 type {packet[0]} is not RPL (155)")
    return decode_message(packet[1], packet[4:])


def _u8(value: int, what: str) -> int:
    if not 0 <= value <= 255:
        raise ValueError(f"{what} {value} does not fit in 8 bits")
    return value


def encode_body(message: Message) -> bytes:
    """The body after the ICMPv6 header."""
    if isinstance(message, Dis):
        return b"\0\0" + encode_options(message.options)
    if isinstance(message, Dio):
        if not 0 <= message.rank <= 0xFFFF or not 0 <= message.preference <= 7 \
                or not 0 <= message.mop <= 7:
            raise ValueError("DIO rank, preference or MOP out of range")
        gmp = message.grounded << 7 | message.mop << 3 | message.preference
        return struct.pack("!BBHBBBB", _u8(message.instance_id, "instance"),
                           _u8(message.version, "version"), message.rank, gmp,
                           _u8(message.dtsn, "DTSN"), 0, 0) \
            + message.dodag_id.packed + encode_options(message.options)
    if isinstance(message, Dao):
        flags = message.ack_requested << 7 | (message.dodag_id is not None) << 6
        head = bytes([_u8(message.instance_id, "instance"), flags, 0,
                      _u8(message.sequence, "DAO sequence")])
        if message.dodag_id is not None:
            head += message.dodag_id.packed
        return head + encode_options(message.options)
    if isinstance(message, DaoAck):
        head = bytes([_u8(message.instance_id, "instance"), (message.dodag_id is not None) << 7,
                      _u8(message.sequence, "DAO sequence"), _u8(message.status, "status")])
        return head + (message.dodag_id.packed if message.dodag_id is not None else b"")
    raise TypeError(f"not an RPL message: {message!r}")


def encode_packet(message: Message) -> bytes:
    """Type, code, zero checksum (the kernel fills it in on a raw ICMPv6 socket) and body."""
    return bytes([c.ICMPV6_TYPE_RPL, message.code, 0, 0]) + encode_body(message)

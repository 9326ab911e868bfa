"""A strict DER reader: the few ASN.1 types X.509 certificates, CRLs and keys are made of.

Certificates and CRLs come from peers and from the network, so this refuses anything that is
not DER: indefinite or non-minimal lengths, high tag numbers, contents that run past their
parent or leave bytes over, non-minimal INTEGERs and OID arcs, BOOLEANs other than 00/FF,
BIT STRINGs with stray unused bits, times that are not the DER forms (RFC 5280 §4.1.2.5).
Each refusal is a DerError (a ValueError) that says what and where. No I/O, no imports beyond
the standard library's datetime: acpd's enrolled node reads certificates with it instead of
cryptography (issue 19: about 8 MB of RSS).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, NULL, OID = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
UTF8_STRING, PRINTABLE_STRING, T61_STRING, IA5_STRING = 0x0C, 0x13, 0x14, 0x16
UTC_TIME, GENERALIZED_TIME, UNIVERSAL_STRING, BMP_STRING = 0x17, 0x18, 0x1C, 0x1E
SEQUENCE, SET = 0x30, 0x31
MAX_LENGTH_OCTETS = 4  # 4 GiB: far beyond anything read here


class DerError(ValueError):
    """Bytes that are not the DER expected."""


def context(number: int, constructed: bool = True) -> int:
    """The tag of [number] (context-specific), constructed (EXPLICIT, or IMPLICIT of a
    constructed type) or primitive."""
    return 0x80 | (0x20 if constructed else 0) | number


class Element:
    """One TLV: its tag, its contents and the whole encoding (`raw`)."""

    __slots__ = ("tag", "raw", "value", "where")

    def __init__(self, tag: int, raw: bytes, value: bytes, where: str) -> None:
        self.tag, self.raw, self.value, self.where = tag, raw, value, where

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[Element]:
        """The elements a constructed element holds, in order."""
        if not self.constructed:
            raise DerError(f"{self.where}: tag 0x{self.tag:02x} is not constructed")
        return list(_elements(self.value, self.where))

    def expect(self, tag: int, what: str) -> Element:
        if self.tag != tag:
            raise DerError(f"{what}: tag 0x{self.tag:02x} where 0x{tag:02x} was expected")
        return self


def _elements(data: bytes, where: str) -> Iterator[Element]:
    offset = 0
    while offset < len(data):
        element, offset = _read(data, offset, where)
        yield element


def _read(data: bytes, offset: int, where: str) -> tuple[Element, int]:
    start = offset
    if len(data) - offset < 2:
        raise DerError(f"{where}: truncated element at byte {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(f"{where}: high tag number form at byte {offset} (not used here)")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(f"{where}: indefinite length at byte {start} (not DER)")
    else:
        count = first & 0x7F
        if count > MAX_LENGTH_OCTETS:
            raise DerError(f"{where}: length of {count} octets at byte {start}")
        if len(data) - offset < count:
            raise DerError(f"{where}: truncated length at byte {start}")
        length = int.from_bytes(data[offset:offset + count], "big")
        if data[offset] == 0 or length < 0x80:
            raise DerError(f"{where}: length not minimally encoded at byte {start} (not DER)")
        offset += count
    end = offset + length
    if end > len(data):
        raise DerError(f"{where}: element at byte {start} claims {length} bytes, "
                       f"{len(data) - offset} present")
    return Element(tag, bytes(data[start:end]), bytes(data[offset:end]), where), end


def parse(data: bytes, what: str) -> Element:
    """The one element `data` holds (nothing may follow it)."""
    element, end = _read(bytes(data), 0, what)
    if end != len(data):
        raise DerError(f"{what}: {len(data) - end} bytes after the end")
    return element


def sequence(element: Element, what: str, lengths: range | None = None) -> list[Element]:
    """A SEQUENCE's elements; `lengths`: how many it may have."""
    items = element.expect(SEQUENCE, what).children()
    if lengths is not None and len(items) not in lengths:
        raise DerError(f"{what}: {len(items)} elements")
    return items


def integer(element: Element, what: str) -> int:
    value = element.expect(INTEGER, what).value
    if not value:
        raise DerError(f"{what}: empty INTEGER")
    if len(value) > 1 and ((value[0] == 0 and value[1] < 0x80)
                           or (value[0] == 0xFF and value[1] >= 0x80)):
        raise DerError(f"{what}: INTEGER not minimally encoded")
    return int.from_bytes(value, "big", signed=True)


def boolean(element: Element, what: str) -> bool:
    value = element.expect(BOOLEAN, what).value
    if value not in (b"\x00", b"\xff"):
        raise DerError(f"{what}: BOOLEAN is not 00 or FF")
    return value == b"\xff"


def oid(element: Element, what: str) -> str:
    """An OBJECT IDENTIFIER in dotted form."""
    value = element.expect(OID, what).value
    if not value or value[-1] & 0x80:
        raise DerError(f"{what}: truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    current = 0
    fresh = True
    for byte in value:
        if fresh and byte == 0x80:
            raise DerError(f"{what}: OBJECT IDENTIFIER arc not minimally encoded")
        current = (current << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def bit_string(element: Element, what: str) -> tuple[bytes, int]:
    """(the bytes, how many bits of the last are unused)."""
    value = element.expect(BIT_STRING, what).value
    if not value or value[0] > 7 or (len(value) == 1 and value[0]):
        raise DerError(f"{what}: malformed BIT STRING")
    unused = value[0]
    if unused and value[-1] & ((1 << unused) - 1):
        raise DerError(f"{what}: BIT STRING has unused bits set (not DER)")
    return value[1:], unused


def octets(element: Element, what: str) -> bytes:
    return element.expect(OCTET_STRING, what).value


def null(element: Element, what: str) -> None:
    if element.expect(NULL, what).value:
        raise DerError(f"{what}: NULL with contents")


def _digits(text: bytes, what: str) -> list[int]:
    if not text.isdigit() or not text.isascii():
        raise DerError(f"{what}: time is not digits and Z")
    return [int(text[i:i + 2]) for i in range(0, len(text), 2)]


def time(element: Element, what: str) -> dt.datetime:
    """UTCTime (YYMMDDHHMMSSZ, 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), as aware UTC."""
    value = element.value
    if element.tag == UTC_TIME:
        if len(value) != 13 or value[-1:] != b"Z":
            raise DerError(f"{what}: UTCTime is not YYMMDDHHMMSSZ")
        year, month, day, hour, minute, second = _digits(value[:-1], what)
        year += 1900 if year >= 50 else 2000
    elif element.tag == GENERALIZED_TIME:
        if len(value) != 15 or value[-1:] != b"Z":
            raise DerError(f"{what}: GeneralizedTime is not YYYYMMDDHHMMSSZ")
        century, year, month, day, hour, minute, second = _digits(value[:-1], what)
        year += 100 * century
    else:
        raise DerError(f"{what}: tag 0x{element.tag:02x} is not a time")
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        raise DerError(f"{what}: no such date and time") from None


_STRINGS = {UTF8_STRING: "utf-8", PRINTABLE_STRING: "ascii", IA5_STRING: "ascii",
            T61_STRING: "latin-1", BMP_STRING: "utf-16-be", UNIVERSAL_STRING: "utf-32-be"}
STRING_TAGS = frozenset(_STRINGS)


def string(element: Element, what: str) -> str:
    """The text of one of the directory string types."""
    encoding = _STRINGS.get(element.tag)
    if encoding is None:
        raise DerError(f"{what}: tag 0x{element.tag:02x} is not a string")
    try:
        return element.value.decode(encoding)
    except UnicodeDecodeError:
        raise DerError(f"{what}: not valid {encoding}") from None


def check(element: Element, what: str, depth: int = 0) -> None:
    """Values nobody reads (an otherName's, a name attribute's of no string type) are DER all
    the same: each universal type it holds decodes, at any depth (DerError if not)."""
    if depth > 16:
        raise DerError(f"{what}: nested more than 16 deep")
    tag = element.tag
    if element.constructed:
        for child in element.children():
            check(child, what, depth + 1)
    elif tag & 0xC0:
        return  # context, application, private: IMPLICIT, unknown underneath
    elif tag == BOOLEAN:
        boolean(element, what)
    elif tag == INTEGER:
        integer(element, what)
    elif tag == BIT_STRING:
        bit_string(element, what)
    elif tag == NULL:
        null(element, what)
    elif tag == OID:
        oid(element, what)
    elif tag in STRING_TAGS:
        string(element, what)
    elif tag in (UTC_TIME, GENERALIZED_TIME):
        time(element, what)


# --- writing (CMS and CSR attributes for the BRSKI work: brski/cms.py, csr.py) -------------

def encode(tag: int, content: bytes) -> bytes:
    """One TLV with a definite, minimal length."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def encode_integer(value: int) -> bytes:
    size = (value + (value < 0)).bit_length() // 8 + 1
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))


def encode_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise DerError(f"{dotted}: not an OBJECT IDENTIFIER")
    body = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


def encode_set_of(elements: list[bytes], tag: int = SET) -> bytes:
    """A SET OF in DER order (the encodings sorted)."""
    return encode(tag, b"".join(sorted(elements)))


def encode_utc_time(when: dt.datetime) -> bytes:
    """UTCTime YYMMDDHHMMSSZ (1950 to 2049); a naive datetime is taken as UTC."""
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    if not 1950 <= when.year < 2050:
        raise DerError(f"{when.year}: outside UTCTime")
    return encode(UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))

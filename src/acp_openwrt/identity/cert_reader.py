"""X.509 certificates read, not built: the fields an enrolled acpd uses, from DER (RFC 5280).

An enrolled node reads certificates all the time (its own LDevID, the trust anchors, the peer
behind each new SA, the CRL issuers) but builds none; cryptography's x509 costs it about 8 MB
of RSS (its Rust extension and Python modules) for good (issue 19). `Certificate` parses the
whole structure strictly (der.py) and keeps what acpd reads: subject and issuer (DER and
attributes), serial, validity, the public key, the signature, and the extensions with decoders
for subjectAltName (otherName, rfc822Name, iPAddress), basicConstraints, keyUsage, the key
identifiers and the CRL distribution points. Signatures are checked by signature.py. The BRSKI
work (registrar, enrolment, renewal) still builds certificates with cryptography.

Attribute names follow cryptography's where they mean the same (serial_number, issuer,
subject, not_valid_before_utc, ...), and `as_certificate` takes a cryptography certificate too
(read again from its DER), so callers and tests may hold either.
"""
from __future__ import annotations

import binascii
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from . import der

MAX_CERTIFICATE_BYTES = 1 << 20
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"

# extensions (RFC 5280 §4.2)
SUBJECT_ALT_NAME = "2.5.29.17"
BASIC_CONSTRAINTS = "2.5.29.19"
KEY_USAGE = "2.5.29.15"
SUBJECT_KEY_ID = "2.5.29.14"
AUTHORITY_KEY_ID = "2.5.29.35"
CRL_DISTRIBUTION_POINTS = "2.5.29.31"
EXTENDED_KEY_USAGE = "2.5.29.37"
# Those cryptography decodes (a critical extension it does not know makes a certificate
# unusable: membership.py); the same set keeps the verdicts the same.
KNOWN_EXTENSIONS = frozenset({
    SUBJECT_ALT_NAME, BASIC_CONSTRAINTS, KEY_USAGE, SUBJECT_KEY_ID, AUTHORITY_KEY_ID,
    CRL_DISTRIBUTION_POINTS, EXTENDED_KEY_USAGE, "2.5.29.32", "2.5.29.30", "2.5.29.36", "2.5.29.54",
    "2.5.29.18", "2.5.29.46", "2.5.29.16", "1.3.6.1.5.5.7.1.1", "1.3.6.1.5.5.7.1.11",
    "1.3.6.1.5.5.7.1.24", "1.3.6.1.4.1.11129.2.4.2", "1.3.6.1.4.1.11129.2.4.3",
    "1.3.6.1.5.5.7.48.1.5", "1.3.6.1.4.1.311.21.7", "1.3.36.8.3.3"})
ID_ON_ACP_NODE_NAME = "1.3.6.1.5.5.7.8.10"
EMAIL_ADDRESS = "1.2.840.113549.1.9.1"

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
CURVES = {"1.2.840.10045.3.1.1": ("secp192r1", 192), "1.3.132.0.33": ("secp224r1", 224),
          "1.2.840.10045.3.1.7": ("secp256r1", 256), "1.3.132.0.34": ("secp384r1", 384),
          "1.3.132.0.35": ("secp521r1", 521)}
# What cryptography calls the public keys acpd refuses (its key strength message names them).
OTHER_KEYS = {"1.3.101.112": "Ed25519PublicKey", "1.3.101.113": "Ed448PublicKey",
              "1.2.840.10040.4.1": "DSAPublicKey", "1.3.101.110": "X25519PublicKey",
              "1.3.101.111": "X448PublicKey"}

UNIQUE_IDENTIFIER = "2.5.4.45"  # x500UniqueIdentifier: the one X.520 attribute no string
# Attributes whose values are strings (X.520's, RFC 4519's dc, PKCS #9's emailAddress): any of
# the string types is taken (cryptography takes a UTF8String dc too), another tag is not.
_STRING_ATTRIBUTES = frozenset({"0.9.2342.19200300.100.1.25", "1.2.840.113549.1.9.1"})
# cryptography's rfc4514_string names (others are written as the dotted OID)
_SHORT_NAMES = {"2.5.4.3": "CN", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
                "2.5.4.11": "OU", "2.5.4.6": "C", "2.5.4.9": "STREET",
                "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID"}


class CertificateError(ValueError):
    """A certificate (or its acp-node-name) that cannot be read or is not acceptable."""


def _escape(value: str) -> str:
    """RFC 4514 §2.4 escaping, as cryptography writes it."""
    if not value:
        return ""
    for char in ("\\", '"', "+", ",", ";", "<", ">"):
        value = value.replace(char, "\\" + char)
    value = value.replace("\0", "\\00")
    if value[0] in ("#", " "):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


class Name:
    """A distinguished name: its DER and its attributes (oid, text, or DER for a non-string)."""

    __slots__ = ("der", "rdns")

    def __init__(self, element: der.Element, what: str) -> None:
        self.der = element.raw
        rdns: list[tuple[tuple[str, str | bytes], ...]] = []
        for rdn in der.sequence(element, what):
            attributes = []
            members = rdn.expect(der.SET, what).children()
            if not members:
                raise der.DerError(f"{what}: empty relative distinguished name")
            for member in members:
                oid_el, value_el = der.sequence(member, what, range(2, 3))
                if value_el.tag & 0xC0:
                    raise der.DerError(f"{what}: attribute value of tag 0x{value_el.tag:02x}")
                der.check(value_el, what)
                kind = der.oid(oid_el, what)
                if (kind in _STRING_ATTRIBUTES or kind.startswith("2.5.4.")) and \
                        kind != UNIQUE_IDENTIFIER and value_el.tag not in der.STRING_TAGS:
                    raise der.DerError(f"{what}: {kind} is not a string")
                value: str | bytes = value_el.raw  # not a string type: kept as DER
                if value_el.tag in der.STRING_TAGS:
                    value = der.string(value_el, what)
                attributes.append((kind, value))
            rdns.append(tuple(attributes))
        self.rdns = tuple(rdns)

    def public_bytes(self) -> bytes:
        return self.der

    def __eq__(self, other: object) -> bool:
        """The same attributes in the same order, whatever string types carry them (as
        cryptography compares names: issuer/subject chaining, a CRL's issuer)."""
        return isinstance(other, Name) and other.rdns == self.rdns

    def __hash__(self) -> int:
        return hash(self.rdns)

    def values(self, oid: str) -> list[str | bytes]:
        return [value for rdn in self.rdns for kind, value in rdn if kind == oid]

    def rfc4514_string(self) -> str:
        def one(kind: str, value: str | bytes) -> str:
            text = _escape(value) if isinstance(value, str) else "#" + value.hex()
            return f"{_SHORT_NAMES.get(kind, kind)}={text}"
        return ",".join("+".join(one(k, v) for k, v in rdn) for rdn in reversed(self.rdns))


@dataclass(frozen=True)
class PublicKey:
    """A subjectPublicKeyInfo: kind "rsa" (n, e), "ec" (curve, point) or another algorithm."""

    algorithm: str                  # the SPKI algorithm OID
    der: bytes                      # the whole SubjectPublicKeyInfo
    kind: str                       # "rsa", "ec", "other"
    key_size: int = 0
    curve: str | None = None        # "secp256r1", ...; None for an unknown curve
    n: int = 0
    e: int = 0
    point: bytes = b""


def _public_key(element: der.Element) -> PublicKey:
    what = "subjectPublicKeyInfo"
    algorithm_el, key_el = der.sequence(element, what, range(2, 3))
    algorithm = der.sequence(algorithm_el, what, range(1, 3))
    oid = der.oid(algorithm[0], what)
    key, unused = der.bit_string(key_el, what)
    if oid in (RSA_ENCRYPTION, RSASSA_PSS):
        if unused:
            raise der.DerError(f"{what}: RSA key with unused bits")
        n_el, e_el = der.sequence(der.parse(key, "RSA public key"), "RSA public key", range(2, 3))
        n, e = der.integer(n_el, "RSA modulus"), der.integer(e_el, "RSA exponent")
        if n <= 0 or e <= 0:
            raise der.DerError("RSA public key: modulus or exponent not positive")
        return PublicKey(oid, element.raw, "rsa", n.bit_length(), n=n, e=e)
    if oid == EC_PUBLIC_KEY:
        if len(algorithm) != 2 or algorithm[1].tag != der.OID:
            raise der.DerError(f"{what}: EC key without a named curve")
        named = CURVES.get(der.oid(algorithm[1], what))
        if unused or not key:
            raise der.DerError(f"{what}: malformed EC point")
        if named is None:
            return PublicKey(oid, element.raw, "ec", 0, point=key)
        return PublicKey(oid, element.raw, "ec", named[1], curve=named[0], point=key)
    return PublicKey(oid, element.raw, "other")


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the extnValue's contents: DER of the extension's own type


def _extensions(element: der.Element) -> tuple[Extension, ...]:
    what = "extensions"
    out: list[Extension] = []
    for item in der.sequence(element, what):
        fields = der.sequence(item, what, range(2, 4))
        oid = der.oid(fields[0], what)
        critical = der.boolean(fields[1], what) if len(fields) == 3 else False
        if len(fields) == 3 and not critical:
            raise der.DerError(f"{what}: critical FALSE written out (not DER)")
        if any(ext.oid == oid for ext in out):
            raise der.DerError(f"{what}: {oid} appears twice")
        out.append(Extension(oid, critical, der.octets(fields[-1], what)))
    return tuple(out)


class Certificate:
    """A parsed certificate (see the module's doc). CertificateError if `data` is not one."""

    def __init__(self, data: bytes) -> None:
        try:
            self._parse(bytes(data))
        except der.DerError as exc:
            raise CertificateError(f"not a valid DER X.509 certificate: {exc}") from None

    def _parse(self, data: bytes) -> None:
        self.der = data
        tbs_el, algorithm_el, signature_el = der.sequence(der.parse(data, "certificate"),
                                                          "certificate", range(3, 4))
        self.tbs_bytes = tbs_el.raw
        self.signature_algorithm_oid, self.signature_parameters = _algorithm(algorithm_el)
        self.signature, unused = der.bit_string(signature_el, "signatureValue")
        if unused:
            raise der.DerError("signatureValue with unused bits")
        fields = der.sequence(tbs_el, "tbsCertificate")
        self.version = 1
        if fields and fields[0].tag == der.context(0):
            explicit = fields.pop(0).children()
            if len(explicit) != 1:
                raise der.DerError("version: not one INTEGER")
            self.version = der.integer(explicit[0], "version") + 1
            if self.version not in (2, 3):
                raise der.DerError(f"version {self.version}")
        if len(fields) < 6:
            raise der.DerError(f"tbsCertificate: {len(fields)} fields")
        self.serial_number = der.integer(fields[0], "serialNumber")
        if _algorithm(fields[1]) != (self.signature_algorithm_oid, self.signature_parameters):
            raise der.DerError("the signature algorithm inside and outside differ")
        self.issuer = Name(fields[2], "issuer")
        times = der.sequence(fields[3], "validity", range(2, 3))
        self.not_valid_before_utc = der.time(times[0], "notBefore")
        self.not_valid_after_utc = der.time(times[1], "notAfter")
        self.subject = Name(fields[4], "subject")
        self.public_key = _public_key(fields[5])
        self.extensions: tuple[Extension, ...] = ()
        for extra in fields[6:]:
            if extra.tag == der.context(1, False) or extra.tag == der.context(2, False):
                continue  # issuerUniqueID, subjectUniqueID
            if extra.tag != der.context(3) or self.version != 3 or self.extensions:
                raise der.DerError(f"tbsCertificate: unexpected tag 0x{extra.tag:02x}")
            inner = extra.children()
            if len(inner) != 1:
                raise der.DerError("extensions: not one SEQUENCE")
            self.extensions = _extensions(inner[0])
        # decoded now, so that a malformed extension refuses the whole certificate
        self.san = general_names(self.extension(SUBJECT_ALT_NAME), "subjectAltName")
        self.basic_constraints = _basic_constraints(self.extension(BASIC_CONSTRAINTS))
        self.key_usage = _key_usage(self.extension(KEY_USAGE))
        self.crl_urls = _crl_urls(self.extension(CRL_DISTRIBUTION_POINTS))
        self.subject_key_id = _subject_key_id(self.extension(SUBJECT_KEY_ID))
        self.authority_key_id = _authority_key_id(self.extension(AUTHORITY_KEY_ID))
        _extended_key_usage(self.extension(EXTENDED_KEY_USAGE))

    def extension(self, oid: str) -> bytes | None:
        return next((ext.value for ext in self.extensions if ext.oid == oid), None)

    def public_bytes(self, encoding: Any = None) -> bytes:
        """DER (PEM when `encoding` is cryptography's Encoding.PEM or the string "PEM")."""
        if str(getattr(encoding, "name", encoding)) == "PEM":
            return pem(self.der)
        return self.der

    def san_values(self, kind: str) -> list[Any]:
        """The subjectAltName entries of one kind: "otherName" (type-id, value DER),
        "rfc822Name" (str), "iPAddress" (an ipaddress address), "uri" (str)."""
        return [value for name, value in self.san if name == kind]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Certificate):
            return other.der == self.der
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"<Certificate {self.subject.rfc4514_string()!r} serial {self.serial_number:x}>"


def _algorithm(element: der.Element) -> tuple[str, bytes | None]:
    """An AlgorithmIdentifier: (OID, parameters' DER or None)."""
    items = der.sequence(element, "algorithm", range(1, 3))
    return der.oid(items[0], "algorithm"), items[1].raw if len(items) == 2 else None


def general_names(value: bytes | None, what: str) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    out: list[tuple[str, Any]] = []
    for name in der.sequence(der.parse(value, what), what):
        if name.tag == der.context(0):  # otherName: type-id, [0] EXPLICIT value
            parts = name.children()
            if len(parts) != 2 or parts[1].tag != der.context(0):
                raise der.DerError(f"{what}: malformed otherName")
            type_el, value_el = parts
            inner = value_el.children()
            if len(inner) != 1:
                raise der.DerError(f"{what}: otherName value is not one element")
            der.check(inner[0], what)  # DER all the same (the name is read in cert_name.py)
            out.append(("otherName", (der.oid(type_el, what), inner[0].raw)))
        elif name.tag in (der.context(1, False), der.context(2, False), der.context(6, False)):
            try:
                text = name.value.decode("ascii")
            except UnicodeDecodeError:
                raise der.DerError(f"{what}: IA5String with 8-bit bytes") from None
            kind = {1: "rfc822Name", 2: "dNSName", 6: "uri"}[name.tag & 0x1F]
            out.append((kind, text))
        elif name.tag == der.context(7, False):
            if len(name.value) not in (4, 16):
                raise der.DerError(f"{what}: iPAddress of {len(name.value)} bytes")
            out.append(("iPAddress", ipaddress.ip_address(name.value)))
        elif name.tag in (der.context(4), der.context(8, False), der.context(3),
                          der.context(5)):
            out.append(("other", name.raw))  # directoryName, registeredID, x400, ediParty
        else:
            raise der.DerError(f"{what}: GeneralName tag 0x{name.tag:02x}")
    if not out:
        raise der.DerError(f"{what}: empty")
    return tuple(out)


def _basic_constraints(value: bytes | None) -> tuple[bool, int | None] | None:
    """(cA, pathLenConstraint) or None without the extension."""
    if value is None:
        return None
    what = "basicConstraints"
    items = der.sequence(der.parse(value, what), what, range(0, 3))
    ca, path_length = False, None
    if items and items[0].tag == der.BOOLEAN:
        ca = der.boolean(items.pop(0), what)
        if not ca:
            raise der.DerError(f"{what}: cA FALSE written out (not DER)")
    if items:
        path_length = der.integer(items.pop(0), what)
        if path_length < 0:
            raise der.DerError(f"{what}: negative pathLenConstraint")
    if items:
        raise der.DerError(f"{what}: unexpected element")
    return ca, path_length


def _key_usage(value: bytes | None) -> int | None:
    """The keyUsage bits as an int, bit 0 (digitalSignature) the first; None without it."""
    if value is None:
        return None
    bits, unused = der.bit_string(der.parse(value, "keyUsage"), "keyUsage")
    number = int.from_bytes(bits, "big") >> unused if bits else 0
    width = len(bits) * 8 - unused
    return sum(1 << i for i in range(width) if number >> (width - 1 - i) & 1)


def _subject_key_id(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    return der.octets(der.parse(value, "subjectKeyIdentifier"), "subjectKeyIdentifier")


def _authority_key_id(value: bytes | None) -> bytes | None:
    """keyIdentifier of authorityKeyIdentifier (None without one); the rest is checked."""
    if value is None:
        return None
    what = "authorityKeyIdentifier"
    key_id = None
    last = -1
    for field in der.sequence(der.parse(value, what), what, range(0, 4)):
        number = field.tag & 0x1F
        if field.tag & 0xC0 != 0x80 or number <= last or number > 2:
            raise der.DerError(f"{what}: field tag 0x{field.tag:02x}")
        last = number
        if field.tag == der.context(0, False):
            key_id = field.value
        elif field.tag == der.context(1):
            general_names(_wrap(field.value), what)
        elif field.tag == der.context(2, False):
            der.integer(der.Element(der.INTEGER, b"", field.value, what), what)
        else:
            raise der.DerError(f"{what}: field tag 0x{field.tag:02x}")
    return key_id


def _extended_key_usage(value: bytes | None) -> tuple[str, ...]:
    if value is None:
        return ()
    what = "extendedKeyUsage"
    usages = tuple(der.oid(e, what) for e in der.sequence(der.parse(value, what), what))
    if not usages:
        raise der.DerError(f"{what}: empty")
    return usages


KEY_CERT_SIGN = 1 << 5
CRL_SIGN = 1 << 6


def _crl_urls(value: bytes | None) -> tuple[str, ...]:
    """The http URLs of the CRL distribution points' full names."""
    if value is None:
        return ()
    what = "cRLDistributionPoints"
    out: list[str] = []
    for point in der.sequence(der.parse(value, what), what):
        for field in der.sequence(point, what):
            if field.tag != der.context(0):
                continue  # reasons, cRLIssuer
            names = field.children()
            if len(names) != 1:
                raise der.DerError(f"{what}: distributionPoint is not one name")
            if names[0].tag != der.context(0):
                continue  # nameRelativeToCRLIssuer
            for kind, text in general_names(_wrap(names[0].value), what):
                if kind == "uri" and text.lower().startswith("http://") and text not in out:
                    out.append(text)
    return tuple(out)


def _wrap(contents: bytes) -> bytes:
    """A SEQUENCE around `contents` (an IMPLICIT SEQUENCE OF read as the plain one)."""
    length = len(contents)
    if length < 0x80:
        header = bytes([length])
    else:
        octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([0x80 | len(octets)]) + octets
    return bytes([der.SEQUENCE]) + header + contents


def pem(data: bytes, label: str = "CERTIFICATE") -> bytes:
    text = binascii.b2a_base64(data, newline=False)
    lines = b"\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label.encode(), lines, label.encode())


def pem_blocks(data: bytes, label: str = "CERTIFICATE") -> list[bytes]:
    """The DER of each PEM block with `label` (text between blocks is ignored)."""
    begin, end = b"-----BEGIN %s-----" % label.encode(), b"-----END %s-----" % label.encode()
    out: list[bytes] = []
    position = 0
    while True:
        start = data.find(begin, position)
        if start < 0:
            return out
        stop = data.find(end, start)
        if stop < 0:
            raise CertificateError(f"PEM {label} block without its END line")
        body = b"".join(data[start + len(begin):stop].split())
        try:
            out.append(binascii.a2b_base64(body, strict_mode=True))
        except binascii.Error:
            raise CertificateError(f"PEM {label} block is not valid base64") from None
        position = stop + len(end)


# --- loading ---------------------------------------------------------------------------------

def read_source(source: bytes | str | os.PathLike[str]) -> bytes:
    """bytes are certificate data; str and path-like objects name a file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        with open(source, "rb") as handle:
            data = handle.read(MAX_CERTIFICATE_BYTES + 1)
    except OSError as exc:
        raise CertificateError(f"cannot read certificate file {os.fspath(source)}: "
                               f"{exc.strerror or exc}") from None
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateError(f"certificate file {os.fspath(source)} is larger than 1 MiB")
    return data


def load_certificates(source: bytes | str | os.PathLike[str]) -> list[Certificate]:
    """All certificates in PEM (one or more blocks) or DER (one) data or file."""
    data = read_source(source)
    what = "certificate data" if isinstance(source, (bytes, bytearray, memoryview)) \
        else f"certificate file {os.fspath(source)}"
    if not data.strip():
        raise CertificateError(f"{what} is empty")
    kind = "PEM" if PEM_BEGIN in data else "DER"
    try:
        blocks = pem_blocks(data) if kind == "PEM" else [data]
        return [Certificate(block) for block in blocks]
    except CertificateError:
        raise CertificateError(f"{what} is not a valid {kind} X.509 certificate") from None


def load_certificate(source: bytes | str | os.PathLike[str]) -> Certificate:
    """Exactly one certificate from PEM or DER data or a file."""
    certificates = load_certificates(source)
    if len(certificates) != 1:
        raise CertificateError(f"expected one certificate, found {len(certificates)}")
    return certificates[0]


def as_certificate(value: Any) -> Certificate:
    """A parsed certificate from one, from PEM/DER bytes, or from a cryptography certificate."""
    if isinstance(value, Certificate):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_certificate(bytes(value))
    if hasattr(value, "public_bytes") and hasattr(value, "tbs_certificate_bytes"):
        from cryptography.hazmat.primitives.serialization import Encoding  # it is loaded
        return Certificate(value.public_bytes(Encoding.DER))
    raise CertificateError(f"expected a certificate or bytes, not {type(value).__name__}")


def validity(cert: Any) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter) as aware UTC datetimes, of a parsed certificate or of
    cryptography's (whose *_utc properties came with 42; OpenWrt 24.10 ships 41.0.7)."""
    before = getattr(cert, "not_valid_before_utc", None)
    if before is None:
        return (cert.not_valid_before.replace(tzinfo=dt.UTC),
                cert.not_valid_after.replace(tzinfo=dt.UTC))
    return before, cert.not_valid_after_utc

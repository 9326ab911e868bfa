"""ACP certificates (RFC 8994 §6.2): loading, the acp-node-name they carry, key strength.

The acp-node-name travels in a subjectAltName otherName with type-id id-on-AcpNodeName
(1.3.6.1.5.5.7.8.10) whose value is an IA5String. cryptography hands us that value as raw DER,
so we decode the IA5String TLV ourselves and strictly: a certificate is a claim made by a peer,
and a sloppy decoder is where such claims slip through.

Interop fallbacks (digest A.4): certificates from the AnimaGUS/Minerva code base put the name
(with a "rfcSELF+"/"rfc8994+" prefix) in an rfc822Name or the subject emailAddress. We accept
those, after the otherName, only when they parse as an acp-node-name, and record which carrier
was used; we never emit them.

This module imports cryptography's x509 (~10 MB resident): the rest of the identity package
must not import it, so that name and address handling stays cheap on small routers.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from .node_name import AcpNodeName, NodeNameError, parse_acp_node_name

ID_ON_ACP_NODE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.10")
IA5STRING_TAG = 0x16
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
MAX_CERTIFICATE_BYTES = 1 << 20

CARRIER_OTHER_NAME = "otherName"
CARRIER_RFC822_NAME = "rfc822Name"
CARRIER_EMAIL_ADDRESS = "emailAddress"

_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"


class CertificateError(ValueError):
    """A certificate (or its acp-node-name) that cannot be read or is not acceptable."""


@dataclass(frozen=True)
class CertificateNodeName:
    """The acp-node-name found in a certificate, as written, parsed, and where it was found."""

    text: str
    node_name: AcpNodeName
    carrier: str


# --- loading ---------------------------------------------------------------------------------

def _read_source(source: bytes | str | os.PathLike[str]) -> bytes:
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


def load_certificates(source: bytes | str | os.PathLike[str]) -> list[x509.Certificate]:
    """All certificates in PEM (one or more blocks) or DER (one) data or file."""
    data = _read_source(source)
    what = "certificate data" if isinstance(source, (bytes, bytearray, memoryview)) \
        else f"certificate file {os.fspath(source)}"
    if not data.strip():
        raise CertificateError(f"{what} is empty")
    try:
        if _PEM_MARKER in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        kind = "PEM" if _PEM_MARKER in data else "DER"
        raise CertificateError(f"{what} is not a valid {kind} X.509 certificate") from None
    return certificates


def load_certificate(source: bytes | str | os.PathLike[str]) -> x509.Certificate:
    """Exactly one certificate from PEM or DER data or a file."""
    certificates = load_certificates(source)
    if len(certificates) != 1:
        raise CertificateError(f"expected one certificate, found {len(certificates)}")
    return certificates[0]


def as_certificate(value: x509.Certificate | bytes) -> x509.Certificate:
    """Accept an already parsed certificate or PEM/DER bytes."""
    if isinstance(value, x509.Certificate):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_certificate(bytes(value))
    raise CertificateError(f"expected a certificate or bytes, not {type(value).__name__}")


def validity(cert: x509.Certificate) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter) as aware UTC datetimes on every cryptography we support: the
    *_utc properties came with 42 (and the naive ones warn from then on), while OpenWrt 24.10
    ships 41.0.7, where only the naive ones exist."""
    before = getattr(cert, "not_valid_before_utc", None)
    if before is None:
        return (cert.not_valid_before.replace(tzinfo=dt.UTC),
                cert.not_valid_after.replace(tzinfo=dt.UTC))
    return before, cert.not_valid_after_utc


# --- the AcpNodeName IA5String ---------------------------------------------------------------

def encode_acp_node_name_value(text: str) -> bytes:
    """DER of the IA5String value inside the otherName (no validation of the name itself)."""
    raw = text.encode("ascii")
    if not raw:
        raise ValueError("AcpNodeName must not be empty (SIZE (1..MAX))")
    length = len(raw)
    if length < 0x80:
        header = bytes([length])
    else:
        octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([0x80 | len(octets)]) + octets
    return bytes([IA5STRING_TAG]) + header + raw


def decode_acp_node_name_value(der: bytes) -> str:
    """The text of a DER IA5String (the otherName's inner value); CertificateError if not one."""
    if len(der) < 2:
        raise CertificateError("AcpNodeName otherName value is truncated")
    if der[0] != IA5STRING_TAG:
        raise CertificateError(f"AcpNodeName otherName value has tag 0x{der[0]:02x}, "
                               f"expected IA5String (0x16)")
    first = der[1]
    offset = 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise CertificateError("AcpNodeName uses an indefinite length (not DER)")
    else:
        count = first & 0x7F
        if count > 4 or len(der) < 2 + count:
            raise CertificateError("AcpNodeName length field is truncated or too long")
        length = int.from_bytes(der[2:2 + count], "big")
        offset = 2 + count
        if length < 0x80 or der[2] == 0:
            raise CertificateError("AcpNodeName length is not minimally encoded (not DER)")
    content = der[offset:]
    if len(content) != length:
        raise CertificateError(f"AcpNodeName length {length} does not match the "
                               f"{len(content)} bytes present")
    if length == 0:
        raise CertificateError("AcpNodeName is empty")
    if any(byte > 0x7F for byte in content):
        raise CertificateError("AcpNodeName contains bytes outside IA5 (7-bit ASCII)")
    return content.decode("ascii")


def acp_node_name_general_name(name: str, *, allow_legacy: bool = False) -> x509.OtherName:
    """The subjectAltName entry for an ACP certificate (otherName id-on-AcpNodeName).

    The name is validated and encoded exactly as given. A legacy "rfcSELF+"/"rfc8994+" prefix
    is refused unless allow_legacy (the test bench uses it to imitate deviant issuers).
    """
    parse_acp_node_name(name)
    if not allow_legacy and name.lower().startswith(("rfcself+", "rfc8994+")):
        raise NodeNameError(f"refusing to emit legacy acp-node-name form {name!r}")
    return x509.OtherName(ID_ON_ACP_NODE_NAME, encode_acp_node_name_value(name))


# --- finding the name in a certificate ------------------------------------------------------

def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or undecodable extensions
        raise CertificateError(f"certificate extensions cannot be decoded: {exc}") from None


def _first_parsable(candidates: Iterable[str], carrier: str) -> CertificateNodeName | None:
    for text in candidates:
        try:
            return CertificateNodeName(text, parse_acp_node_name(text), carrier)
        except NodeNameError:
            continue  # an ordinary e-mail address, not an acp-node-name
    return None


def find_acp_node_name(cert: x509.Certificate) -> CertificateNodeName | None:
    """The certificate's acp-node-name, or None when it carries none.

    Preference: otherName, then rfc822Name, then subject emailAddress. An otherName with our
    type-id is authoritative: if it is malformed we raise CertificateError rather than fall
    back to a weaker carrier.
    """
    san = _san(cert)
    if san is not None:
        values = [entry.value for entry in san.get_values_for_type(x509.OtherName)
                  if entry.type_id == ID_ON_ACP_NODE_NAME]
        if len(values) > 1:
            raise CertificateError(f"certificate carries {len(values)} AcpNodeName otherNames")
        if values:
            text = decode_acp_node_name_value(values[0])
            try:
                return CertificateNodeName(text, parse_acp_node_name(text), CARRIER_OTHER_NAME)
            except NodeNameError as exc:
                raise CertificateError(f"AcpNodeName otherName is malformed: {exc}") from None
        found = _first_parsable(san.get_values_for_type(x509.RFC822Name), CARRIER_RFC822_NAME)
        if found is not None:
            return found
    emails = [attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    return _first_parsable([v for v in emails if isinstance(v, str)], CARRIER_EMAIL_ADDRESS)


def certificate_node_name(cert: x509.Certificate) -> tuple[AcpNodeName, str] | None:
    """(parsed name, carrier) of find_acp_node_name, or None; the shape acpctl uses."""
    found = find_acp_node_name(cert)
    return None if found is None else (found.node_name, found.carrier)


def certificate_node_name_text(cert: x509.Certificate) -> str | None:
    """The acp-node-name text of an issued certificate (otherName only), or None."""
    try:
        found = find_acp_node_name(cert)
    except (CertificateError, NodeNameError):
        return None
    return found.text if found and found.carrier == "otherName" else None


# --- key strength and signature hashes (§6.2.1) ---------------------------------------------

def key_strength_problem(public_key: object) -> str | None:
    """Why a public key is not acceptable for ACP certificates, or None when it is."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            return f"RSA key of {public_key.key_size} bits is too small (minimum {MIN_RSA_BITS})"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size < MIN_EC_BITS:
            return (f"EC key on {public_key.curve.name} ({public_key.curve.key_size} bits) "
                    f"is too small (minimum {MIN_EC_BITS})")
        return None
    return f"{type(public_key).__name__} keys are not accepted (RSA or ECDSA only)"


def check_key_strength(public_key: object) -> None:
    """Raise CertificateError when the key is below RFC 8994 §6.2.1's minimum."""
    problem = key_strength_problem(public_key)
    if problem:
        raise CertificateError(problem)


ACCEPTED_SIGNATURE_HASHES = ("sha256", "sha384", "sha512")


def signature_hash_problem(cert: x509.Certificate) -> str | None:
    """Why the certificate's signature hash is not acceptable (SHA-256/384/512 only), or None."""
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:  # UnsupportedAlgorithm: an OID cryptography does not know
        return f"signature algorithm {cert.signature_algorithm_oid.dotted_string} is not supported"
    name = algorithm.name if algorithm is not None else "none"
    if name not in ACCEPTED_SIGNATURE_HASHES:
        return f"signature hash {name} is not accepted (SHA-256/384/512 only)"
    return None

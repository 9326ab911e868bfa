"""ACP certificates (RFC 8994 §6.2) as cryptography objects: loading, the acp-node-name
otherName to put in one, key strength of keys and CSRs (the BRSKI work: registrar, enrolment,
renewal, the lab).

This module imports cryptography's x509 (~8 MB resident): an enrolled node's steady state reads
certificates with cert_reader.py and finds their names with cert_name.py (both without
cryptography, issue 19); the name-finding functions here are those, re-exported.
"""
from __future__ import annotations

import datetime as dt
import os

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ObjectIdentifier

from .cert_name import (  # noqa: F401 (re-exported: the BRSKI work's names for them)
    CARRIER_EMAIL_ADDRESS,
    CARRIER_OTHER_NAME,
    CARRIER_RFC822_NAME,
    IA5STRING_TAG,
    CertificateNodeName,
    certificate_node_name,
    certificate_node_name_text,
    decode_acp_node_name_value,
    find_acp_node_name,
)
from .cert_reader import MAX_CERTIFICATE_BYTES, CertificateError, read_source  # noqa: F401
from .node_name import NodeNameError, parse_acp_node_name

ID_ON_ACP_NODE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.10")
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"


# --- loading ---------------------------------------------------------------------------------

def load_certificates(source: bytes | str | os.PathLike[str]) -> list[x509.Certificate]:
    """All certificates in PEM (one or more blocks) or DER (one) data or file."""
    data = read_source(source)
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


def acp_node_name_general_name(name: str, *, allow_legacy: bool = False) -> x509.OtherName:
    """The subjectAltName entry for an ACP certificate (otherName id-on-AcpNodeName).

    The name is validated and encoded exactly as given. A legacy "rfcSELF+"/"rfc8994+" prefix
    is refused unless allow_legacy (the test bench uses it to imitate deviant issuers).
    """
    parse_acp_node_name(name)
    if not allow_legacy and name.lower().startswith(("rfcself+", "rfc8994+")):
        raise NodeNameError(f"refusing to emit legacy acp-node-name form {name!r}")
    return x509.OtherName(ID_ON_ACP_NODE_NAME, encode_acp_node_name_value(name))


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

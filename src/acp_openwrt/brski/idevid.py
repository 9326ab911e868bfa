"""What BRSKI reads from an IDevID (RFC 8995 §2.3): the serial number and the MASA URL.

The serial number is the subject's X520SerialNumber (2.5.4.5), not the certificate serial.
The MASA URL extension (id-pe-masa-url) is an IA5String, usually just "host[:port]", meaning
https://host:port/.well-known/brski (§2.3.2).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from .wellknown import BRSKI, ID_PE_MASA_URL

MASA_URL_OID = ObjectIdentifier(ID_PE_MASA_URL)
MAX_URL = 1024


class IdevidError(ValueError):
    """An IDevID without the serial number or with an unusable MASA URL."""


def serial_number(cert: x509.Certificate) -> str:
    """The device serial number from the subject; IdevidError when there is not exactly one."""
    values = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    if len(values) != 1 or not isinstance(values[0], str) or not values[0]:
        raise IdevidError(f"certificate {cert.subject.rfc4514_string()} carries "
                          f"{len(values)} subject serialNumber attributes, expected one")
    return values[0]


def encode_ia5(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > MAX_URL:
        raise IdevidError(f"MASA URL longer than {MAX_URL} characters")
    length = bytes([len(raw)]) if len(raw) < 0x80 else \
        bytes([0x82]) + len(raw).to_bytes(2, "big")
    return b"\x16" + length + raw


def decode_ia5(der: bytes) -> str:
    if len(der) < 2 or der[0] != 0x16:
        raise IdevidError("MASA URL extension is not an IA5String")
    first, offset = der[1], 2
    if first & 0x80:
        count = first & 0x7F
        if count not in (1, 2) or len(der) < 2 + count:
            raise IdevidError("MASA URL extension has a bad length")
        first, offset = int.from_bytes(der[2:2 + count], "big"), 2 + count
    body = der[offset:]
    if len(body) != first or not body or any(b > 0x7E or b < 0x21 for b in body):
        raise IdevidError("MASA URL extension length or characters are invalid")
    return body.decode("ascii")


def masa_url_extension(url: str) -> x509.UnrecognizedExtension:
    """The non-critical id-pe-masa-url extension for an IDevID."""
    return x509.UnrecognizedExtension(MASA_URL_OID, encode_ia5(url))


def masa_url(cert: x509.Certificate) -> str | None:
    """The MASA URL text of an IDevID, or None when it has no such extension."""
    try:
        ext = cert.extensions.get_extension_for_oid(MASA_URL_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else None
    if raw is None:
        raise IdevidError("MASA URL extension cannot be read")
    return decode_ia5(raw)


def masa_endpoint(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) for a MASA URL: "host[:port]" or an https URL."""
    text = url if "://" in url else f"https://{url}"
    try:
        parts = urlsplit(text)
        port = parts.port or 443
    except ValueError as exc:
        raise IdevidError(f"MASA URL {url!r} is not usable: {exc}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise IdevidError(f"MASA URL {url!r} must be https with a host")
    path = parts.path.rstrip("/") if parts.path not in ("", "/") else BRSKI
    return parts.hostname, port, path

"""The acp-node-name a certificate carries (RFC 8994 §6.2.2), found without cryptography.

The acp-node-name travels in a subjectAltName otherName with type-id id-on-AcpNodeName
(1.3.6.1.5.5.7.8.10) whose value is an IA5String; we decode that TLV ourselves and strictly:
a certificate is a claim made by a peer, and a sloppy decoder is where such claims slip through.

Interop fallbacks (digest A.4): certificates from the AnimaGUS/Minerva code base put the name
(with a "rfcSELF+"/"rfc8994+" prefix) in an rfc822Name or the subject emailAddress. We accept
those, after the otherName, only when they parse as an acp-node-name, and record which carrier
was used; we never emit them.

Works on cert_reader's parsed certificates (and on cryptography's, read again from their
DER): an enrolled acpd finds its peers' names with no cryptography loaded (issue 19).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .cert_reader import EMAIL_ADDRESS, ID_ON_ACP_NODE_NAME, CertificateError, as_certificate
from .node_name import AcpNodeName, NodeNameError, parse_acp_node_name

IA5STRING_TAG = 0x16
CARRIER_OTHER_NAME = "otherName"
CARRIER_RFC822_NAME = "rfc822Name"
CARRIER_EMAIL_ADDRESS = "emailAddress"


@dataclass(frozen=True)
class CertificateNodeName:
    """The acp-node-name found in a certificate, as written, parsed, and where it was found."""

    text: str
    node_name: AcpNodeName
    carrier: str


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


def _first_parsable(candidates: Iterable[str], carrier: str) -> CertificateNodeName | None:
    for text in candidates:
        try:
            return CertificateNodeName(text, parse_acp_node_name(text), carrier)
        except NodeNameError:
            continue  # an ordinary e-mail address, not an acp-node-name
    return None


def find_acp_node_name(cert: Any) -> CertificateNodeName | None:
    """The certificate's acp-node-name, or None when it carries none.

    Preference: otherName, then rfc822Name, then subject emailAddress. An otherName with our
    type-id is authoritative: if it is malformed we raise CertificateError rather than fall
    back to a weaker carrier.
    """
    parsed = as_certificate(cert)
    values = [value for type_id, value in parsed.san_values("otherName")
              if type_id == ID_ON_ACP_NODE_NAME]
    if len(values) > 1:
        raise CertificateError(f"certificate carries {len(values)} AcpNodeName otherNames")
    if values:
        text = decode_acp_node_name_value(values[0])
        try:
            return CertificateNodeName(text, parse_acp_node_name(text), CARRIER_OTHER_NAME)
        except NodeNameError as exc:
            raise CertificateError(f"AcpNodeName otherName is malformed: {exc}") from None
    found = _first_parsable(parsed.san_values("rfc822Name"), CARRIER_RFC822_NAME)
    if found is not None:
        return found
    emails = parsed.subject.values(EMAIL_ADDRESS)
    return _first_parsable([v for v in emails if isinstance(v, str)], CARRIER_EMAIL_ADDRESS)


def certificate_node_name(cert: Any) -> tuple[AcpNodeName, str] | None:
    """(parsed name, carrier) of find_acp_node_name, or None; the shape acpctl uses."""
    found = find_acp_node_name(cert)
    return None if found is None else (found.node_name, found.carrier)


def certificate_node_name_text(cert: Any) -> str | None:
    """The acp-node-name text of an issued certificate (otherName only), or None."""
    try:
        found = find_acp_node_name(cert)
    except (CertificateError, NodeNameError):
        return None
    return found.text if found and found.carrier == "otherName" else None

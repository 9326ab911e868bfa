"""Which IKE identity a node uses, and whether a peer's identity fits its certificate.

RFC 8994 §6.8.3.1.2 asks for ID_IPV6_ADDR carrying the ACP address. strongSwan (5.9) would
*send* any configured identity, but it *accepts* a peer's identity only when the peer's
certificate confirms it (subject DN or a subjectAltName it parses), and the AcpNodeName otherName
confirms nothing to it: the receiving charon logs "no trusted ECDSA public key found for
'<address>'" and refuses (tried in the guest: tests/vm/test_ike_interop.py; the evidence is in
docs/conformance.md). So our registrar (and lab.pki's `ip_address=`) also writes the ACP address
as an iPAddress subjectAltName: then the RFC's identity is used as is. Certificates without it
fall back to the rfc822Name carrying the acp-node-name (the AnimaGUS/legacy carrier), else to
the subject DN (strongSwan's default when no id is given), which strongSwan peers accept.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..identity.address import address_from_name
from ..identity.cert_name import find_acp_node_name
from ..identity.cert_reader import Certificate, as_certificate

KIND_IPV6 = "ID_IPV6_ADDR"
KIND_RFC822 = "ID_RFC822_ADDR"
KIND_DN = "ID_DER_ASN1_DN"


@dataclass(frozen=True)
class IkeIdentity:
    kind: str
    value: str | None          # None: let strongSwan use the certificate's subject DN


def _acp_address(cert: Certificate) -> ipaddress.IPv6Address | None:
    found = find_acp_node_name(cert)
    if found is None or not found.node_name.has_address:
        return None
    return address_from_name(found.node_name).address


def local_identity(certificate: Any) -> IkeIdentity:
    """Our identity: the ACP address if an iPAddress SAN confirms it, else the fallbacks."""
    cert = as_certificate(certificate)
    address = _acp_address(cert)
    if address is not None and address in cert.san_values("iPAddress"):
        return IkeIdentity(KIND_IPV6, str(address))
    found = find_acp_node_name(cert)
    rfc822 = cert.san_values("rfc822Name")
    if found is not None and found.text in rfc822:
        return IkeIdentity(KIND_RFC822, found.text)
    return IkeIdentity(KIND_DN, None)


def identity_problem(remote_id: str, peer_address: ipaddress.IPv6Address | None) -> str | None:
    """§6.8.3.1.2: an IPv6 identity MUST equal the ACP address of the peer's certificate."""
    try:
        claimed = ipaddress.ip_address(remote_id)
    except ValueError:
        return None  # a fallback identity; strongSwan already tied it to the certificate
    if peer_address is None or claimed != peer_address:
        return f"IKE identity {remote_id} is not the certificate's ACP address {peer_address}"
    return None

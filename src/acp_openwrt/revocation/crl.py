"""X.509 CRLs of the ACP domain CA and their distribution point (RFC 8994 §6.2.5.3).

The registrar signs the CRL with the domain CA's key and serves it over plain HTTP on its ACP
address; every certificate it issues names that URL in a cRLDistributionPoints extension
(`http://[<registrar ACP address>]/acp.crl`): an IPv6 ULA literal, so nodes fetch it across
the ACP (a DNS name would mean the data plane). The CRL is signed, so HTTP needs no TLS, and a
revoked node can still fetch it and learn of its revocation.

Nodes read CRLs with `Crl` (a strict DER reader, ../identity/der.py) and check their signatures
with ../identity/signature.py: an enrolled acpd holds no cryptography for them (issue 19). The
registrar builds them with cryptography (`build_crl`, imported there only).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..identity import der, signature
from ..identity.cert_reader import (
    Certificate,
    CertificateError,
    Name,
    as_certificate,
    pem,
    pem_blocks,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

CRL_PORT = 80
CRL_PATH = "/acp.crl"
CRL_MEDIA_TYPE = "application/pkix-crl"   # RFC 5280 §4.2.1.13 (DER)
DEFAULT_VALIDITY = dt.timedelta(days=1)      # nextUpdate after thisUpdate


class CrlError(ValueError):
    """Not a CRL, or not one of our CA's."""


def crl_url(address: str | ipaddress.IPv6Address, port: int = CRL_PORT) -> str:
    """The CRLDP URL of a registrar at ACP `address`."""
    host = f"[{ipaddress.IPv6Address(address)}]"
    return f"http://{host}{'' if port == CRL_PORT else f':{port}'}{CRL_PATH}"


def split_url(url: str) -> tuple[str, int, str]:
    """(IPv6 address, port, path) of an http://[v6]:port/path CRLDP URL (others: CrlError:
    a DNS name would mean a fetch through the data plane, which acpd does not do)."""
    if not url.startswith("http://["):
        raise CrlError(f"CRLDP {url!r} is not http:// with an IPv6 literal")
    host, sep, rest = url[len("http://["):].partition("]")
    if not sep:
        raise CrlError(f"CRLDP {url!r}: no closing bracket")
    try:
        address = str(ipaddress.IPv6Address(host))
    except ValueError:
        raise CrlError(f"CRLDP {url!r}: {host!r} is no IPv6 address") from None
    port, path = CRL_PORT, rest
    if rest.startswith(":"):
        digits, slash, tail = rest[1:].partition("/")
        if not digits.isdigit() or not 0 < int(digits) < 65536:
            raise CrlError(f"CRLDP {url!r}: bad port")
        port, path = int(digits), slash + tail
    return address, port, path or "/"


def distribution_points(url: str) -> x509.CRLDistributionPoints:
    """The cRLDistributionPoints extension naming `url` (full name, all reasons, CA = issuer)."""
    from cryptography import x509
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None,
        crl_issuer=None)])


def crl_urls(cert: Any) -> list[str]:
    """The http URLs of the certificate's CRL distribution points ([] without any)."""
    return list(as_certificate(cert).crl_urls)


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime


def _hash(key: Any) -> hashes.SHA256 | hashes.SHA384:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def build_crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
              entries: Iterable[RevokedEntry], *, now: dt.datetime, number: int,
              validity: dt.timedelta = DEFAULT_VALIDITY) -> x509.CertificateRevocationList:
    """A CRL of `issuer` (signed with its `key`) listing `entries`, with CRL number `number`
    (monotonic: a node keeps the CRL with the highest) and nextUpdate `now + validity`."""
    from cryptography import x509
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(now).next_update(now + validity)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   key.public_key()), critical=False))
    for entry in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(entry.serial)
            .revocation_date(entry.revoked_at).build())
    return builder.sign(key, _hash(key))


CRL_NUMBER = "2.5.29.20"


class Crl:
    """A parsed CRL (RFC 5280 §5): issuer, thisUpdate, nextUpdate, the CRL number and the
    revoked serials with their dates; CrlError if `data` (DER) is not one."""

    def __init__(self, data: bytes) -> None:
        try:
            self._parse(bytes(data))
        except der.DerError as exc:
            raise CrlError(f"not a CRL: {exc}") from None

    def _parse(self, data: bytes) -> None:
        self.der = data
        tbs_el, algorithm_el, signature_el = der.sequence(der.parse(data, "CRL"), "CRL",
                                                          range(3, 4))
        self.tbs_bytes = tbs_el.raw
        self.signature_algorithm_oid, self.signature_parameters = _algorithm(algorithm_el)
        self.signature, unused = der.bit_string(signature_el, "CRL signatureValue")
        if unused:
            raise der.DerError("CRL signatureValue with unused bits")
        fields = der.sequence(tbs_el, "tbsCertList")
        if fields and fields[0].tag == der.INTEGER:
            if der.integer(fields.pop(0), "CRL version") != 1:
                raise der.DerError("CRL version is not v2")
        if len(fields) < 3:
            raise der.DerError("tbsCertList: too few fields")
        if _algorithm(fields[0]) != (self.signature_algorithm_oid, self.signature_parameters):
            raise der.DerError("the CRL's signature algorithm inside and outside differ")
        self.issuer = Name(fields[1], "CRL issuer")
        self.last_update_utc = der.time(fields[2], "thisUpdate")
        rest = fields[3:]
        self.next_update_utc: dt.datetime | None = None
        if rest and rest[0].tag in (der.UTC_TIME, der.GENERALIZED_TIME):
            self.next_update_utc = der.time(rest.pop(0), "nextUpdate")
        self.revoked: dict[int, dt.datetime] = {}
        if rest and rest[0].tag == der.SEQUENCE:
            for entry in der.sequence(rest.pop(0), "revokedCertificates"):
                items = der.sequence(entry, "revoked entry", range(2, 4))
                serial = der.integer(items[0], "revoked serial")
                if serial in self.revoked:
                    raise der.DerError(f"serial {serial:x} listed twice")
                self.revoked[serial] = der.time(items[1], "revocationDate")
        self.number = -1
        if rest and rest[0].tag == der.context(0):
            inner = rest.pop(0).children()
            if len(inner) != 1:
                raise der.DerError("crlExtensions: not one SEQUENCE")
            for item in der.sequence(inner[0], "crlExtensions"):
                parts = der.sequence(item, "crlExtensions", range(2, 4))
                if der.oid(parts[0], "crlExtensions") == CRL_NUMBER:
                    self.number = der.integer(der.parse(der.octets(parts[-1], "CRL number"),
                                                        "CRL number"), "CRL number")
        if rest:
            raise der.DerError(f"tbsCertList: unexpected tag 0x{rest[0].tag:02x}")

    def public_bytes(self, encoding: Any = None) -> bytes:
        """DER (PEM when `encoding` is cryptography's Encoding.PEM or the string "PEM")."""
        if str(getattr(encoding, "name", encoding)) == "PEM":
            return pem(self.der, "X509 CRL")
        return self.der


def _algorithm(element: der.Element) -> tuple[str, bytes | None]:
    items = der.sequence(element, "algorithm", range(1, 3))
    return der.oid(items[0], "algorithm"), items[1].raw if len(items) == 2 else None


def as_crl(value: Any) -> Crl:
    """A parsed CRL from one, from DER/PEM bytes, or from a cryptography CRL."""
    if isinstance(value, Crl):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_crl(bytes(value))
    if hasattr(value, "public_bytes") and hasattr(value, "tbs_certlist_bytes"):
        from cryptography.hazmat.primitives.serialization import Encoding  # it is loaded
        return Crl(value.public_bytes(Encoding.DER))
    raise CrlError(f"expected a CRL or bytes, not {type(value).__name__}")


def load_crl(data: bytes) -> Crl:
    """A CRL from DER or PEM bytes (CrlError otherwise)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            blocks = pem_blocks(data, "X509 CRL")
        except CertificateError as exc:
            raise CrlError(f"not a CRL: {exc}") from None
        if len(blocks) != 1:
            raise CrlError(f"not a CRL: {len(blocks)} PEM X509 CRL blocks")
        data = blocks[0]
    return Crl(data)


_END = b"-----END X509 CRL-----"
_URL_LINE = b"# from "


def load_crls(data: bytes) -> list[tuple[str | None, Crl]]:
    """Every PEM CRL in `data` (a keeper's file), each with the distribution point named on a
    `# from URL` line before it (None without one)."""
    out: list[tuple[str | None, Crl]] = []
    for block in data.split(_END):
        if not block.strip():
            continue
        url = None
        for line in block.splitlines():
            if line.startswith(_URL_LINE):
                url = line[len(_URL_LINE):].decode("ascii", "replace").strip() or None
        start = block.find(b"-----BEGIN")
        if start < 0:
            raise CrlError("not a CRL: text without a PEM block")
        out.append((url, load_crl(block[start:] + _END)))
    return out


def crl_pem(crls: Sequence[tuple[str | None, Any]]) -> bytes:
    """The keeper's file: each CRL as PEM after a `# from URL` line."""
    return b"".join((_URL_LINE + url.encode("ascii") + b"\n" if url else b"")
                    + pem(as_crl(c).der, "X509 CRL") for url, c in crls)


def crl_number(crl: Any) -> int:
    return as_crl(crl).number


def this_update(crl: Any) -> dt.datetime:
    return as_crl(crl).last_update_utc


def next_update(crl: Any) -> dt.datetime | None:
    return as_crl(crl).next_update_utc


def crl_issuer(crl: Any, issuers: Sequence[Any]) -> Certificate:
    """Which of `issuers` (the node's trust anchors: the domain CA and the CAs above it)
    signed the CRL; CrlError when none did."""
    parsed = as_crl(crl)
    for cert in (as_certificate(c) for c in issuers):
        if cert.subject != parsed.issuer or cert.public_key.kind not in ("ec", "rsa"):
            continue
        try:
            signature.verify(parsed.tbs_bytes, parsed.signature_algorithm_oid,
                             parsed.signature_parameters, parsed.signature, cert.public_key)
        except (signature.InvalidSignature, signature.UnsupportedSignature):
            continue
        return cert
    raise CrlError(f"CRL of {parsed.issuer.rfc4514_string() or '(empty issuer)'} is not "
                   f"signed by one of our trust anchors")


def revocation_of(crl: Any, cert: Any) -> dt.datetime | None:
    """When `cert` was revoked according to `crl` (None: not listed, or another issuer)."""
    parsed, certificate = as_crl(crl), as_certificate(cert)
    if parsed.issuer != certificate.issuer:
        return None
    return parsed.revoked.get(certificate.serial_number)

"""X.509 CRLs of the ACP domain CA and their distribution point (RFC 8994 §6.2.5.3).

The registrar signs the CRL with the domain CA's key and serves it over plain HTTP on its ACP
address; every certificate it issues names that URL in a cRLDistributionPoints extension
(`http://[<registrar ACP address>]/acp.crl`): an IPv6 ULA literal, so nodes fetch it across
the ACP (a DNS name would mean the data plane). The CRL is signed, so HTTP needs no TLS, and a
revoked node can still fetch it and learn of its revocation.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
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
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None,
        crl_issuer=None)])


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The http URLs of the certificate's CRL distribution points ([] without any)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for point in points:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier) and \
                    name.value.lower().startswith("http://") and name.value not in out:
                out.append(name.value)
    return out


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime


def _hash(key: Any) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def build_crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
              entries: Iterable[RevokedEntry], *, now: dt.datetime, number: int,
              validity: dt.timedelta = DEFAULT_VALIDITY) -> x509.CertificateRevocationList:
    """A CRL of `issuer` (signed with its `key`) listing `entries`, with CRL number `number`
    (monotonic: a node keeps the CRL with the highest) and nextUpdate `now + validity`."""
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


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from DER or PEM bytes (CrlError otherwise)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"not a CRL: {exc}") from None


_END = b"-----END X509 CRL-----"
_URL_LINE = b"# from "


def load_crls(data: bytes) -> list[tuple[str | None, x509.CertificateRevocationList]]:
    """Every PEM CRL in `data` (a keeper's file), each with the distribution point named on a
    `# from URL` line before it (None without one)."""
    out: list[tuple[str | None, x509.CertificateRevocationList]] = []
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


def crl_pem(crls: Sequence[tuple[str | None, x509.CertificateRevocationList]]) -> bytes:
    """The keeper's file: each CRL as PEM after a `# from URL` line."""
    return b"".join((_URL_LINE + url.encode("ascii") + b"\n" if url else b"")
                    + c.public_bytes(serialization.Encoding.PEM) for url, c in crls)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


def _utc(obj: object, name: str) -> dt.datetime | None:
    """obj.<name>_utc (cryptography >= 42), else the naive UTC value made aware (41)."""
    value = getattr(obj, f"{name}_utc", None)
    if value is None:
        value = getattr(obj, name, None)
    if value is None:
        return None
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def this_update(crl: x509.CertificateRevocationList) -> dt.datetime:
    found = _utc(crl, "last_update")
    assert found is not None
    return found


def next_update(crl: x509.CertificateRevocationList) -> dt.datetime | None:
    return _utc(crl, "next_update")


def crl_issuer(crl: x509.CertificateRevocationList,
               issuers: Sequence[x509.Certificate]) -> x509.Certificate:
    """Which of `issuers` (the node's trust anchors: the domain CA and the CAs above it)
    signed the CRL; CrlError when none did."""
    for cert in issuers:
        if cert.subject != crl.issuer:
            continue
        public_key = cert.public_key()
        if isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)) and \
                crl.is_signature_valid(public_key):
            return cert
    raise CrlError(f"CRL of {crl.issuer.rfc4514_string() or '(empty issuer)'} is not "
                   f"signed by one of our trust anchors")


def revocation_of(crl: x509.CertificateRevocationList,
                  cert: x509.Certificate) -> dt.datetime | None:
    """When `cert` was revoked according to `crl` (None: not listed, or another issuer)."""
    if crl.issuer != cert.issuer:
        return None
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    return None if entry is None else _utc(entry, "revocation_date")

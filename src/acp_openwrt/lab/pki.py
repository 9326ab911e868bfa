"""A small test-bench PKI: a domain CA, intermediates and ACP node certificates as PEM files.

Real X.509 made with cryptography, so tests, the demo and the secure-channel and BRSKI work
exercise the same parsing and path validation a deployment does. Every knob that a refusal
test needs is exposed: validity windows (expired / not yet valid), key types (too small),
broken CA flags, legacy name carriers and raw otherName bytes.

    ca = TestCA.create(tmp_path, domain="acp.example.com")
    sub = ca.issue_intermediate("sub1")
    node = sub.issue_node("n1", acp_node_name="fd89...00+@acp.example.com")
    node.cert_path, node.key_path, node.chain_path, node.anchor_path
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ..identity.certificate import ID_ON_ACP_NODE_NAME, acp_node_name_general_name

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DEFAULT_KEY_TYPE = "ec-p256"
NODE_LIFETIME = dt.timedelta(days=365)
CA_LIFETIME = dt.timedelta(days=3650)
CLOCK_SKEW = dt.timedelta(hours=1)

_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "p192": ec.SECP192R1, "p224": ec.SECP224R1, "p256": ec.SECP256R1, "p384": ec.SECP384R1,
    "p521": ec.SECP521R1}
_KEY_TYPE = re.compile(r"(?:ec-(p\d+)|rsa-(\d+))\Z")
_FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def generate_key(key_type: str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A fresh private key: "ec-p256" (default), "ec-p384", "ec-p521", "ec-p224", "ec-p192",
    or "rsa-<bits>" (e.g. "rsa-2048", "rsa-1024" for refusal tests)."""
    match = _KEY_TYPE.match(key_type)
    if not match or (match.group(1) and match.group(1) not in _CURVES):
        raise ValueError(f"unknown key type {key_type!r} (ec-p256/p384/p521/p224/p192, rsa-<bits>)")
    if match.group(1):
        return ec.generate_private_key(_CURVES[match.group(1)]())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(match.group(2)))


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """Match the hash to the curve strength (RFC 8994 §6.2.1 wants SHA-256 at least)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        stronger: dict[int, hashes.SHA384 | hashes.SHA512] = {384: hashes.SHA384(),
                                                              521: hashes.SHA512()}
        return stronger.get(key.curve.key_size, hashes.SHA256())
    return hashes.SHA256()


def _check_stem(name: str) -> str:
    if not _FILE_STEM.match(name):
        raise ValueError(f"name {name!r} must be 1-64 characters of [A-Za-z0-9._-], "
                         f"not starting with a dot or dash")
    return name


def _write_pem(path: Path, data: bytes, mode: int) -> None:
    """Write and force the mode (O_CREAT's mode is masked by umask and ignored for old files)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _window(not_before: dt.datetime | None, not_after: dt.datetime | None,
            lifetime: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    start = not_before if not_before is not None else now - CLOCK_SKEW
    end = not_after if not_after is not None else max(start, now) + lifetime
    return start, end


@dataclass(frozen=True)
class NodeCredentials:
    """What a node needs for its ACP identity; paths point at PEM files (key mode 0600)."""

    name: str
    cert_path: Path
    key_path: Path
    chain_path: Path | None  # intermediates, issuer first; None when issued by the root
    anchor_path: Path  # the domain CA (trust anchor)
    certificate: x509.Certificate = field(repr=False)
    private_key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = field(repr=False, default=())
    anchor: x509.Certificate | None = field(repr=False, default=None)
    acp_node_name: str | None = None


@dataclass(frozen=True)
class TestCA:
    """A CA of the lab PKI: the domain's root, or an intermediate issued by another TestCA."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    name: str
    domain: str
    certificate: x509.Certificate = field(repr=False)
    private_key: PrivateKey = field(repr=False)
    cert_path: Path
    key_path: Path
    anchor_path: Path
    chain: tuple[x509.Certificate, ...] = field(repr=False)  # self (if not root) up to the root
    anchor: x509.Certificate = field(repr=False)
    pss: bool = False

    @classmethod
    def create(cls, directory: str | os.PathLike[str], *, domain: str = "acp.example.com",
               name: str = "ca", common_name: str | None = None,
               key_type: str = DEFAULT_KEY_TYPE, not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None, path_length: int | None = None,
               pss: bool = False) -> TestCA:
        """A self-signed domain CA, written as <directory>/<name>.crt and <name>.key.

        pss makes an RSA CA sign with RSASSA-PSS instead of PKCS#1 v1.5.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        key = generate_key(key_type)
        subject = x509.Name([x509.NameAttribute(
            NameOID.COMMON_NAME, common_name or f"ACP domain CA {domain}")])
        start, end = _window(not_before, not_after, CA_LIFETIME)
        builder = cls._ca_builder(subject, subject, key, key, start, end, path_length, True, True)
        cert = builder.sign(key, _hash_for(key), rsa_padding=_padding(key, pss))
        cert_path, key_path = cls._write(folder, _check_stem(name), cert, key)
        return cls(folder, name, domain, cert, key, cert_path, key_path, cert_path, (), cert, pss)

    @staticmethod
    def _ca_builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey,
                    issuer_key: PrivateKey, start: dt.datetime, end: dt.datetime,
                    path_length: int | None, ca: bool, key_cert_sign: bool,
                    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                           critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
        )

    @staticmethod
    def _write(folder: Path, stem: str, cert: x509.Certificate, key: PrivateKey,
               ) -> tuple[Path, Path]:
        cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
        _write_pem(cert_path, _cert_pem(cert), 0o644)
        _write_pem(key_path, _key_pem(key), 0o600)
        return cert_path, key_path

    @property
    def is_root(self) -> bool:
        return not self.chain

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self.private_key, _hash_for(self.private_key),
                            rsa_padding=_padding(self.private_key, self.pss))

    def issue_intermediate(self, name: str, *, common_name: str | None = None,
                           key_type: str = DEFAULT_KEY_TYPE,
                           not_before: dt.datetime | None = None,
                           not_after: dt.datetime | None = None,
                           path_length: int | None = None, ca: bool = True,
                           key_cert_sign: bool = True, pss: bool = False) -> TestCA:
        """An intermediate CA signed by this one (ca/key_cert_sign False make broken ones)."""
        key = generate_key(key_type)
        subject = x509.Name([x509.NameAttribute(
            NameOID.COMMON_NAME, common_name or f"ACP intermediate {name} {self.domain}")])
        start, end = _window(not_before, not_after, CA_LIFETIME)
        cert = self._sign(self._ca_builder(subject, self.certificate.subject, key,
                                           self.private_key, start, end, path_length, ca,
                                           key_cert_sign))
        cert_path, key_path = self._write(self.directory, _check_stem(name), cert, key)
        return TestCA(self.directory, name, self.domain, cert, key, cert_path, key_path,
                      self.anchor_path, (cert,) + self.chain, self.anchor, pss)

    def issue_node(self, name: str, *, acp_node_name: str | None = None,
                   rfc822_name: str | None = None, email_address: str | None = None,
                   ip_address: str | ipaddress.IPv6Address | None = None,
                   other_name_value: bytes | None = None, key_type: str = DEFAULT_KEY_TYPE,
                   not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
                   serial_number: str | None = None) -> NodeCredentials:
        """A node (end-entity) certificate; files <name>.crt, <name>.key, <name>-chain.pem.

        acp_node_name goes into the otherName id-on-AcpNodeName (legacy prefixes allowed here,
        to imitate deviant issuers); other_name_value puts raw DER there instead (for malformed
        tests). rfc822_name, the subject email_address and an iPAddress SAN (the ACP address,
        e.g. for the IKE identity) are optional; serial_number is the X.520 subject attribute.
        """
        stem = _check_stem(name)
        key = generate_key(key_type)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
        if serial_number:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
        if email_address:
            attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email_address))
        san: list[x509.GeneralName] = []
        if acp_node_name is not None:
            san.append(acp_node_name_general_name(acp_node_name, allow_legacy=True))
        if other_name_value is not None:
            san.append(x509.OtherName(ID_ON_ACP_NODE_NAME, other_name_value))
        if rfc822_name is not None:
            san.append(x509.RFC822Name(rfc822_name))
        if ip_address is not None:
            san.append(x509.IPAddress(ipaddress.IPv6Address(ip_address)))
        start, end = _window(not_before, not_after, NODE_LIFETIME)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes)).issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.private_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = self._sign(builder)
        cert_path, key_path = self._write(self.directory, stem, cert, key)
        chain_path = None
        if self.chain:
            chain_path = self.directory / f"{stem}-chain.pem"
            _write_pem(chain_path, _cert_pem(*self.chain), 0o644)
        return NodeCredentials(stem, cert_path, key_path, chain_path, self.anchor_path, cert, key,
                               self.chain, self.anchor, acp_node_name)


def _padding(key: PrivateKey, pss: bool) -> padding.PSS | None:
    """CertificateBuilder.sign's rsa_padding: PSS only when asked and the key is RSA (None: the
    key's default, PKCS#1 v1.5 for RSA)."""
    if pss and isinstance(key, rsa.RSAPrivateKey):
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                           salt_length=padding.PSS.DIGEST_LENGTH)
    return None

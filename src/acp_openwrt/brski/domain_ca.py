"""The registrar's domain CA: created on first start (or given), issues ACP certificates.

An ACP certificate carries the acp-node-name in the AcpNodeName otherName (RFC 8994 §6.2.2)
and the ACP address as an iPAddress SAN (IKEv2 identifies ACP peers by ID_IPV6_ADDR, §6.8.2),
plus the pledge's serialNumber for diagnostics (§6.2.1). The registrar's own certificate
additionally has id-kp-cmcRA (RFC 8995 §2.5.3) next to serverAuth/clientAuth.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ..identity.certificate import acp_node_name_general_name, validity
from .file_switch import NewFile, SwitchError, recover_switch, switch_files
from .wellknown import ID_KP_CMC_RA

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
CA_LIFETIME = dt.timedelta(days=3650)
NODE_LIFETIME = dt.timedelta(days=90)
BACKDATE = dt.timedelta(minutes=10)


class DomainCAError(ValueError):
    """The CA files cannot be read, do not match, or a certificate cannot be issued."""


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _hash(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _marker(cert_file: Path) -> Path:
    return cert_file.with_name(f".{cert_file.name}.switch")


@dataclass(frozen=True)
class DomainCA:
    certificate: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path
    domain: str

    @classmethod
    def load_or_create(cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                       *, domain: str) -> DomainCA:
        """Load the CA from its two PEM files, or make a new P-256 one when both are absent."""
        cert_file, key_file = Path(cert_path), Path(key_path)
        try:  # a first start that crashed while writing the CA: both files or neither
            recover_switch(_marker(cert_file), [cert_file, key_file])
        except OSError as exc:
            raise DomainCAError(f"domain CA {cert_file}: {exc.strerror or exc}") from None
        if cert_file.exists() != key_file.exists():
            raise DomainCAError(f"only one of {cert_file} and {key_file} exists")
        if not cert_file.exists():
            return cls._create(cert_file, key_file, domain)
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise DomainCAError(f"cannot load domain CA {cert_file}: {exc}") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise DomainCAError(f"{key_file}: only EC and RSA CA keys are supported")
        if cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) != \
                key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
            raise DomainCAError(f"{key_file} is not the key of {cert_file}")
        return cls(cert, key, cert_file, key_file, domain)

    @classmethod
    def _create(cls, cert_file: Path, key_file: Path, domain: str) -> DomainCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ACP domain CA {domain}")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                .add_extension(_key_usage(True), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        try:
            switch_files([NewFile(key_file, key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()),
                                  0o600),
                          NewFile(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)],
                         _marker(cert_file))
        except SwitchError as exc:
            raise DomainCAError(f"cannot write domain CA {cert_file}: {exc}") from None
        return cls(cert, key, cert_file, key_file, domain)

    def issue(self, public_key: object, acp_node_name: str, *,
              address: ipaddress.IPv6Address | None = None, serial_number: str | None = None,
              lifetime: dt.timedelta = NODE_LIFETIME, registrar: bool = False,
              now: dt.datetime | None = None) -> x509.Certificate:
        """An ACP certificate for `public_key` (registrar=True adds id-kp-cmcRA)."""
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise DomainCAError("only EC and RSA keys get ACP certificates")
        now = now or dt.datetime.now(dt.timezone.utc)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, acp_node_name.split("@")[0][:64])]
        if serial_number:
            subject.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
        san: list[x509.GeneralName] = [acp_node_name_general_name(acp_node_name)]
        if address is not None:
            san.append(x509.IPAddress(ipaddress.IPv6Address(address)))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if registrar:
            usages.append(ObjectIdentifier(ID_KP_CMC_RA))
        end = min(now + lifetime, validity(self.certificate)[1])
        builder = (x509.CertificateBuilder().subject_name(x509.Name(subject))
                   .issuer_name(self.certificate.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - BACKDATE).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.SubjectAlternativeName(san), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        return builder.sign(self.key, _hash(self.key))

"""The registrar's domain CA: created on first start (or given), issues ACP certificates.

Given: the operator's sub-CA (`registrar_ca_cert`, its certificate followed by the chain up to
the operator's root, and `registrar_ca_key`), checked at start by `load_operator`, so that a
certificate that could not issue, or a chain nodes could not verify, stops the registrar with
the file named instead of producing LDevIDs no peer accepts. The domain's trust anchor is then
the operator's root; the nodes' trust anchors file holds the root and the CA certificates
below it (`trust_anchors`), so IKE and TLS peers verify the whole chain from one file.

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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ...identity.certificate import acp_node_name_general_name, validity
from ..file_switch import NewFile, SwitchError, recover_switch, switch_files
from ..wellknown import ID_KP_CMC_RA

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
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


def _hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _marker(cert_file: Path) -> Path:
    return cert_file.with_name(f".{cert_file.name}.switch")


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _ca_problem(cert: x509.Certificate, below: int) -> str | None:
    """Why `cert` cannot sign certificates with `below` CA certificates under it, or None."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"{_label(cert)} is not a CA (no basicConstraints)"
    if not basic.ca:
        return f"{_label(cert)} is not a CA (basicConstraints CA:FALSE)"
    if basic.path_length is not None and basic.path_length < below:
        return (f"{_label(cert)} has pathlen:{basic.path_length}, but {below} CA "
                f"certificate(s) below it")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return f"{_label(cert)} has no keyUsage (keyCertSign needed)"
    if not usage.key_cert_sign:
        return f"{_label(cert)} may not sign certificates (keyUsage without keyCertSign)"
    return None


def ca_chain_problem(chain: list[x509.Certificate], key: object,
                  now: dt.datetime | None = None) -> str | None:
    """Why a CA (chain[0], then its issuers up to a self-signed root) cannot be the domain CA
    with `key`, or None: key, CA, keyCertSign, path length, signatures, root, validity."""
    if not chain:
        return "no certificate"
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return "only EC and RSA CA keys are supported"
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        return f"the key is not the key of {_label(chain[0])}"
    now = now or dt.datetime.now(dt.UTC)
    for depth, cert in enumerate(chain):
        start, end = validity(cert)
        if now < start:
            return f"{_label(cert)} is not valid before {start:%Y-%m-%d %H:%M} UTC"
        if now >= end:
            return f"{_label(cert)} expired {end:%Y-%m-%d %H:%M} UTC"
        problem = _ca_problem(cert, depth)
        if problem:
            return problem
        issuer = chain[depth + 1] if depth + 1 < len(chain) else cert
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:  # InvalidSignature, ValueError (names differ), TypeError (key type)
            if issuer is cert:
                return (f"the chain ends at {_label(cert)}, which is not self-signed: append "
                        f"the certificates up to the root")
            return f"{_label(cert)} is not issued by the next certificate, {_label(issuer)}"
    return None


@dataclass(frozen=True)
class DomainCA:
    certificate: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path
    domain: str
    chain: tuple[x509.Certificate, ...] = ()  # above `certificate`, up to the root; () if root

    @property
    def root(self) -> x509.Certificate:
        """The domain's trust anchor (RFC 8994 §6.2.3: one anchor for the whole domain)."""
        return self.chain[-1] if self.chain else self.certificate

    @property
    def cacerts(self) -> tuple[x509.Certificate, ...]:
        """Our CA and its chain up to the root: EST /cacerts (RFC 7030 §4.1.3)."""
        return (self.certificate, *self.chain)

    @property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        """What a node's trust anchors file holds: the root first, then the CAs below it."""
        return (self.root, *self.cacerts[:-1]) if self.chain else (self.certificate,)

    @classmethod
    def load_operator(cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                      *, domain: str, now: dt.datetime | None = None) -> DomainCA:
        """The operator's CA from `registrar_ca_cert` (CA first, then its chain) and
        `registrar_ca_key`, checked completely; DomainCAError names the file at fault."""
        cert_file, key_file = Path(cert_path), Path(key_path)
        try:
            chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
        except OSError as exc:
            raise DomainCAError(f"registrar_ca_cert {cert_file}: "
                                f"{exc.strerror or exc}") from None
        except ValueError as exc:
            raise DomainCAError(f"registrar_ca_cert {cert_file}: no PEM certificate: "
                                f"{exc}") from None
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        except OSError as exc:
            raise DomainCAError(f"registrar_ca_key {key_file}: {exc.strerror or exc}") from None
        except (ValueError, TypeError) as exc:
            raise DomainCAError(f"registrar_ca_key {key_file}: not an unencrypted PEM key: "
                                f"{exc}") from None
        problem = ca_chain_problem(chain, key, now)
        if problem is not None:
            which = f"registrar_ca_key {key_file}" if problem.startswith(("the key", "only")) \
                else f"registrar_ca_cert {cert_file}"
            raise DomainCAError(f"{which}: {problem}")
        return cls(chain[0], key, cert_file, key_file, domain, tuple(chain[1:]))  # type: ignore

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
            chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise DomainCAError(f"cannot load domain CA {cert_file}: {exc}") from None
        cert = chain[0]
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise DomainCAError(f"{key_file}: only EC and RSA CA keys are supported")
        if _spki(cert.public_key()) != _spki(key.public_key()):
            raise DomainCAError(f"{key_file} is not the key of {cert_file}")
        if len(chain) > 1:  # an operator's sub-CA restored from a backup: checked as at first
            problem = ca_chain_problem(chain, key)
            if problem is not None:
                raise DomainCAError(f"domain CA {cert_file}: {problem}")
        return cls(cert, key, cert_file, key_file, domain, tuple(chain[1:]))

    @classmethod
    def _create(cls, cert_file: Path, key_file: Path, domain: str) -> DomainCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ACP domain CA {domain}")])
        now = dt.datetime.now(dt.UTC)
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
              now: dt.datetime | None = None, crl_url: str | None = None) -> x509.Certificate:
        """An ACP certificate for `public_key` (registrar=True adds id-kp-cmcRA; `crl_url`:
        a cRLDistributionPoints extension naming it, RFC 8994 §6.2.5.3)."""
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise DomainCAError("only EC and RSA keys get ACP certificates")
        now = now or dt.datetime.now(dt.UTC)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, acp_node_name.split("@")[0][:64])]
        if serial_number:
            subject.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
        san: list[x509.GeneralName] = [acp_node_name_general_name(acp_node_name)]
        if address is not None:
            san.append(x509.IPAddress(ipaddress.IPv6Address(address)))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if registrar:
            usages.append(ObjectIdentifier(ID_KP_CMC_RA))
        end = min([now + lifetime, *(validity(c)[1] for c in self.cacerts)])
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
        if crl_url is not None:
            from ...revocation.crl import distribution_points
            builder = builder.add_extension(distribution_points(crl_url), critical=False)
        return builder.sign(self.key, _hash(self.key))

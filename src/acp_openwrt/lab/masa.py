"""A manufacturer for the test bench: IDevIDs and a MASA that signs vouchers (RFC 8995 §5.5).

    masa = Masa.create(tmp / "vendor", host="::1")
    idevid = masa.issue_idevid("SN-0001")          # serialNumber + id-pe-masa-url
    masa.trust_registrar(domain_ca_certificate)    # vouchers only for domains it knows
    server = await masa.serve()                    # HTTPS /.well-known/brski/requestvoucher

Real CMS and real TLS. The MASA checks the registrar voucher-request (signature, id-kp-cmcRA,
chain to a domain CA it trusts), the pledge's prior-signed request inside it (signed by the
IDevID it issued for that serial, same serial and nonce, proximity-registrar-cert = the
registrar's key) and pins the domain CA. `mangle` and `sign_with` forge bad vouchers for the
refusal tests. Not shipped to routers.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ..brski import cms, idevid, wellknown
from ..brski.http import Request, Response, serve_connection, text_response
from ..brski.tls import chain_problem, server_context
from ..brski.voucher import Voucher, VoucherError, parse_voucher
from .pki import TestCA, _cert_pem, _key_pem, _write_pem, generate_key

LOG = logging.getLogger("acp.lab.masa")
IDEVID_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
NONCELESS_LIFETIME = dt.timedelta(minutes=20)


@dataclass(frozen=True)
class Idevid:
    serial: str
    cert_path: Path
    key_path: Path
    certificate: x509.Certificate = field(repr=False)


@dataclass
class Masa:
    directory: Path
    vendor: TestCA
    signer_cert: x509.Certificate
    signer_key: Any
    tls_cert_path: Path
    tls_key_path: Path
    host: str
    port: int = 0
    devices: dict[str, x509.Certificate] = field(default_factory=dict)
    trusted_domains: list[x509.Certificate] = field(default_factory=list)
    audit_log: list[dict[str, Any]] = field(default_factory=list)
    # Test knobs: rewrite the voucher's leaves, or sign with someone else's key.
    mangle: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    _server: asyncio.base_events.Server | None = None

    @classmethod
    def create(cls, directory: str | os.PathLike[str], *, host: str = "::1",
               name: str = "vendor") -> Masa:
        folder = Path(directory)
        vendor = TestCA.create(folder, domain="vendor.example", name=f"{name}-ca",
                               common_name=f"{name} IDevID CA", not_after=IDEVID_NOT_AFTER)
        signer = vendor.issue_node(f"{name}-masa")  # voucher-signing key (plain EE cert)
        tls_key = generate_key()
        now = dt.datetime.now(dt.UTC)
        tls_cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                f"{name} MASA")]))
                    .issuer_name(vendor.certificate.subject).public_key(tls_key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(hours=1))
                    .not_valid_after(now + dt.timedelta(days=30))
                    .add_extension(x509.SubjectAlternativeName(
                        [x509.IPAddress(ipaddress.ip_address(host))]
                        if _is_ip(host) else [x509.DNSName(host)]), critical=False)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                   critical=False)
                    # Python 3.13+ verifies with VERIFY_X509_STRICT, which wants the AKI
                    # (OpenWrt master ships Python 3.14).
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(tls_key.public_key()),
                                   critical=False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        vendor.private_key.public_key()), critical=False)
                    .sign(vendor.private_key, _sha256()))
        tls_cert_path = folder / f"{name}-masa-tls.crt"
        tls_key_path = folder / f"{name}-masa-tls.key"
        _write_pem(tls_cert_path, _cert_pem(tls_cert, vendor.certificate), 0o644)
        _write_pem(tls_key_path, _key_pem(tls_key), 0o600)
        return cls(folder, vendor, signer.certificate, signer.private_key, tls_cert_path,
                   tls_key_path, host)

    @property
    def anchor_path(self) -> Path:
        """The manufacturer trust anchor: pledges check vouchers with it, registrars IDevIDs
        and the MASA's TLS certificate."""
        return self.vendor.cert_path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def issue_idevid(self, serial: str, *, masa_url: str | None = None,
                     register: bool = True) -> Idevid:
        """An IDevID for `serial` naming this MASA (register=False: a device it never made)."""
        key = generate_key()
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)]))
                .issuer_name(self.vendor.certificate.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(IDEVID_NOT_AFTER)
                .add_extension(idevid.masa_url_extension(masa_url or self.url), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.vendor.private_key.public_key()), critical=False)
                .sign(self.vendor.private_key, _sha256()))
        stem = "idevid-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in serial)
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        _write_pem(cert_path, _cert_pem(cert), 0o644)
        _write_pem(key_path, _key_pem(key), 0o600)
        if register:
            self.devices[serial] = cert
        return Idevid(serial, cert_path, key_path, cert)

    def trust_registrar(self, domain_ca: x509.Certificate) -> None:
        self.trusted_domains.append(domain_ca)

    def sign_with(self, other: Masa) -> None:
        """Sign vouchers with another manufacturer's MASA key (a forged-voucher test)."""
        self.signer_cert, self.signer_key = other.signer_cert, other.signer_key

    # --- the voucher decision ----------------------------------------------------------------

    def decide(self, body: bytes, now: dt.datetime | None = None) -> Response:
        now = now or dt.datetime.now(dt.UTC)
        try:
            signed = cms.verify(body)
            request = parse_voucher(signed.content, request=True)
        except (cms.CmsError, VoucherError) as exc:
            return self._refuse(400, f"registrar voucher-request rejected: {exc}")
        if not _has_cmc_ra(signed.signer):
            return self._refuse(403, "registrar certificate lacks id-kp-cmcRA")
        domain = next((ca for ca in self.trusted_domains
                       if chain_problem(signed.signer, ca, signed.certificates, now) is None), None)
        if domain is None:
            return self._refuse(403, "registrar is not in a domain this MASA trusts")
        device = self.devices.get(request.serial_number)
        if device is None:
            return self._refuse(404, f"unknown device {request.serial_number!r}")
        if request.prior_signed_voucher_request is None:
            return self._refuse(403, "no prior-signed-voucher-request (nonceless not offered)")
        try:
            prior_signed = cms.verify(request.prior_signed_voucher_request,
                                      signer_candidates=[device])
            prior = parse_voucher(prior_signed.content, request=True)
        except (cms.CmsError, VoucherError) as exc:
            return self._refuse(403, f"pledge voucher-request rejected: {exc}")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        registrar_spki = signed.signer.public_key().public_bytes(serialization.Encoding.DER, spki)
        try:
            proximity = x509.load_der_x509_certificate(prior.proximity_registrar_cert or b"")
        except ValueError:
            return self._refuse(403, "pledge voucher-request has no proximity-registrar-cert")
        if prior_signed.signer != device or prior.serial_number != request.serial_number \
                or prior.nonce != request.nonce or \
                proximity.public_key().public_bytes(serialization.Encoding.DER, spki) \
                != registrar_spki:
            return self._refuse(403, "pledge and registrar voucher-requests do not agree "
                                     "(signer, serial-number, nonce or registrar key)")
        leaves: dict[str, Any] = {
            "serial_number": request.serial_number, "assertion": "proximity", "created_on": now,
            "nonce": request.nonce,
            "pinned_domain_cert": domain.public_bytes(serialization.Encoding.DER)}
        if request.nonce is None:
            leaves["expires_on"] = now + NONCELESS_LIFETIME
        if self.mangle is not None:
            leaves = self.mangle(dict(leaves))
        voucher = Voucher(**leaves)
        self.audit_log.append({"date": now.isoformat(), "serial": request.serial_number,
                               "nonce": request.nonce, "domain": domain.subject.rfc4514_string()})
        LOG.info("MASA issued a voucher for %s", request.serial_number)
        return Response(200, cms.sign(voucher.to_json(), self.signer_cert, self.signer_key),
                        {"content-type": wellknown.VOUCHER_CMS_JSON})

    @staticmethod
    def _refuse(status: int, reason: str) -> Response:
        LOG.warning("MASA refused: %s (HTTP %d)", reason, status)
        return text_response(status, reason)

    # --- serving -----------------------------------------------------------------------------

    async def _handle(self, request: Request, writer: asyncio.StreamWriter) -> Response:
        if (request.method, request.path) != ("POST", wellknown.REQUEST_VOUCHER):
            return text_response(404, f"no {request.method} {request.path}")
        if request.content_type() != wellknown.VOUCHER_CMS_JSON:
            return text_response(415, f"expected {wellknown.VOUCHER_CMS_JSON}")
        return self.decide(request.body)

    async def serve(self, *, sock: Any = None, port: int = 0) -> asyncio.base_events.Server:
        """Listen (on `sock`, or on host:port) with TLS; sets self.port."""
        context = server_context(self.tls_cert_path, self.tls_key_path)

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_connection(reader, writer, self._handle)
        if sock is not None:
            self._server = await asyncio.start_server(connection, sock=sock, ssl=context)
        else:
            self._server = await asyncio.start_server(connection, self.host, port, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


def _has_cmc_ra(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ObjectIdentifier(wellknown.ID_KP_CMC_RA) in usages


@dataclass
class BenchRegistrar:
    """A registrar wired to a bench MASA, serving on `port` (see start_bench_registrar)."""
    registrar: Any
    server: asyncio.base_events.Server
    port: int
    directory: Path

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        self.registrar.allocator.close()


async def start_bench_registrar(directory: str | os.PathLike[str], masa: Masa, *,
                                domain: str = "acp.example.com", sock: Any = None,
                                host: str = "::1", port: int = 0,
                                trust: bool = True, **options: Any) -> BenchRegistrar:
    """Domain CA + allocator + registrar identity in `directory`, trusted by `masa` (unless
    trust=False), trusting the MASA's IDevIDs, listening with TLS on `sock` or host:port."""
    from ..brski.registrar.allocation import Allocator
    from ..brski.registrar.core import Registrar, ensure_registrar_identity
    from ..brski.registrar.domain_ca import DomainCA
    from ..brski.tls import verified_client_context
    folder = Path(directory)
    ca = DomainCA.load_or_create(folder / "domain-ca.crt", folder / "domain-ca.key", domain=domain)
    allocator = Allocator(folder / "allocations.db", domain=domain)
    cert_path, key_path = folder / "registrar.crt", folder / "registrar.key"
    cert, key = ensure_registrar_identity(ca, allocator, cert_path, key_path)
    if trust:
        masa.trust_registrar(ca.certificate)
    registrar = Registrar(ca, allocator, cert, key, masa_context=verified_client_context(
        masa.anchor_path, cert_path=cert_path, key_path=key_path, check_hostname=True), **options)
    context = registrar.ssl_context(cert_path, key_path, [masa.anchor_path])
    server = await registrar.serve(context, sock=sock, host=None if sock else host, port=port)
    return BenchRegistrar(registrar, server, server.sockets[0].getsockname()[1], folder)

"""TLS for BRSKI: the pledge's provisional client, verified clients, servers, pinning checks.

The pledge first accepts any registrar certificate (RFC 8995 §5.1, "provisional"), keeps it,
and only after the voucher names the domain's certificate checks that the registrar's chains
to it (§5.6.2): `chain_problem` is that check. TLS 1.2 is the floor everywhere (§5.1).
"""
from __future__ import annotations

import _ssl
import datetime as dt
import os
import ssl
from collections.abc import Sequence
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ..identity.certificate import validity

MAX_CHAIN_DEPTH = 4


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def provisional_client_context(cert_path: str | os.PathLike[str],
                               key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """The pledge's first TLS: IDevID as client certificate, the server not yet verified."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    return context


def verified_client_context(ca_path: str | os.PathLike[str] | None = None, *,
                            cadata: str | None = None,
                            cert_path: str | os.PathLike[str] | None = None,
                            key_path: str | os.PathLike[str] | None = None,
                            check_hostname: bool = False) -> ssl.SSLContext:
    """A client that verifies the server against `ca_path`/`cadata` (ACP peers have no DNS
    names, so the host name is checked only where one exists, e.g. towards the MASA)."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = check_hostname
    context.load_verify_locations(cafile=os.fspath(ca_path) if ca_path else None, cadata=cadata)
    if cert_path and key_path:
        context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    return context


def server_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], *,
                   client_ca_paths: Sequence[str | os.PathLike[str]] = ()) -> ssl.SSLContext:
    """A server; with client CAs it asks for a client certificate and verifies one if sent
    (CERT_OPTIONAL: the handler decides which endpoints need one)."""
    context = _base(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    for path in client_ca_paths:
        context.load_verify_locations(cafile=os.fspath(path))
    context.verify_mode = ssl.CERT_OPTIONAL if client_ca_paths else ssl.CERT_NONE
    return context


class HasExtraInfo(Protocol):
    """An asyncio transport or StreamWriter."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def peer_certificate(transport_or_writer: HasExtraInfo) -> x509.Certificate | None:
    """The TLS peer's end-entity certificate (verified or not, per the context), or None."""
    get = transport_or_writer.get_extra_info
    ssl_object = get("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


# _ssl.Certificate.public_bytes' DER format (the private chain gives those, not bytes)
_DER = getattr(_ssl, "ENCODING_DER", 2)


def peer_chain(transport_or_writer: HasExtraInfo) -> list[x509.Certificate]:
    """The certificates the peer sent, leaf first; else only the leaf.

    Public since Python 3.13; CPython 3.10 to 3.12 have it on the private _sslobj, used then:
    a registrar under an operator's sub-CA is verified through the chain it sends, and the
    OpenWrt releases ship 3.11."""
    ssl_object = transport_or_writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return []
    unverified = getattr(ssl_object, "get_unverified_chain", None) or \
        getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if unverified is not None:
        chain = unverified() or []  # a server without a client certificate: [None] on 3.11
        return [x509.load_der_x509_certificate(c if isinstance(c, bytes) else
                                               c.public_bytes(_DER)) for c in chain if c]
    leaf = peer_certificate(transport_or_writer)
    return [leaf] if leaf is not None else []


def _time_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    before, after = validity(cert)
    if now < before:
        return f"certificate {cert.subject.rfc4514_string()} is not valid before " \
               f"{before:%Y-%m-%d %H:%M:%S}Z"
    if now > after:
        return f"certificate {cert.subject.rfc4514_string()} expired " \
               f"{after:%Y-%m-%d %H:%M:%S}Z"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def chain_problem(leaf: x509.Certificate, anchor: x509.Certificate,
                  intermediates: Sequence[x509.Certificate] = (),
                  now: dt.datetime | None = None, *, check_time: bool = True) -> str | None:
    """Why `leaf` does not chain to `anchor` (signatures, validity), or None when it does.

    The anchor may be the leaf itself (RFC 8995 Appendix C pins the registrar's own
    certificate) or a CA above it, reached through at most MAX_CHAIN_DEPTH intermediates.
    Validity is checked at `now` (default: the clock's), not at all with check_time=False.
    """
    now = now or dt.datetime.now(dt.UTC)
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH + 1):
        problem = _time_problem(current, now) if check_time else None
        if problem:
            return problem
        if current == anchor:
            return None
        issuers = [c for c in (anchor, *intermediates) if c.subject == current.issuer
                   and c != current]
        if not issuers:
            return f"no certificate issued {current.subject.rfc4514_string()} " \
                   f"(issuer {current.issuer.rfc4514_string()} is not the pinned domain CA)"
        for issuer in issuers:
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            if not _is_ca(issuer):
                return f"{issuer.subject.rfc4514_string()} signed a certificate but is not a CA"
            current = issuer
            break
        else:
            return f"signature on {current.subject.rfc4514_string()} does not verify with " \
                   f"the pinned domain certificate"
    return "certificate chain is too long"

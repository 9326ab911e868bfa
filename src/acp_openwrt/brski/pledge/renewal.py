"""LDevID renewal over EST (RFC 8994 §6.2.5): when to renew, and the re-enrolment itself.

`renewal_time` is the pure decision: renew once `fraction` (default 40%) of the certificate's
lifetime has passed, i.e. comfortably before the 50% the RFC names, and retry failures with
doubling back-off but never later than the expiry. `reenroll` does one /simplereenroll with
the current LDevID as TLS client certificate, against an EST server that must chain to our
trust anchors and carry id-kp-cmcRA; the new certificate must keep the acp-node-name (and so
the ACP address), and replaces the old one atomically together with a fresh key.
"""
from __future__ import annotations

import base64
import binascii
import logging
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...identity.certificate import validity
from .. import wellknown
from ..http import HttpConnection, HttpError
from ..store import StoredIdentity, load_identity, store_identity
from ..tls import chain_problem, peer_certificate, verified_client_context
from .client import IO_TIMEOUT, Locator, _connect
from .core import generate_key
from .plan import MIN_RETRY, RENEW_FRACTION, RenewalError, RenewalPlan, renewal_time

__all__ = ["MIN_RETRY", "RENEW_FRACTION", "RenewalError", "RenewalPlan", "reenroll",
           "renewal_time", "renewed_anchors"]

LOG = logging.getLogger("acpd.brski.renewal")


def _server_problem(server: x509.Certificate | None) -> str | None:
    if server is None:
        return "EST server sent no certificate"
    try:
        usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "EST server certificate has no extended key usage (id-kp-cmcRA required)"
    if x509.ObjectIdentifier(wellknown.ID_KP_CMC_RA) not in usages:
        return "EST server certificate lacks id-kp-cmcRA"
    return None


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RenewalError("EST response body is not base64") from None


async def reenroll(locator: Locator, stored: StoredIdentity, *, namespace: str | None = None,
                   io_timeout: float = IO_TIMEOUT) -> x509.Certificate:
    """Renew the stored LDevID at the EST server `locator`; returns the new certificate."""
    from .. import cms, csr  # only while renewing (in renewal_process.py's short-lived process)
    current = load_identity(stored.cert_path, stored.key_path)
    if current is None:
        raise RenewalError(f"no usable LDevID at {stored.cert_path}")
    old_cert, _ = current
    name = csr.certificate_node_name_text(old_cert)
    if name is None:
        raise RenewalError("current LDevID carries no acp-node-name otherName")
    from ...identity.certificate import load_certificates
    anchors = load_certificates(stored.trust_anchors_path)
    context = verified_client_context(stored.trust_anchors_path, cert_path=stored.cert_path,
                                      key_path=stored.key_path)
    try:
        reader, writer = await _connect(locator, context, namespace, io_timeout)
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        raise RenewalError(f"cannot reach EST server {locator}: {exc or type(exc).__name__}") \
            from None
    connection = HttpConnection(reader, writer, timeout=io_timeout)
    try:
        problem = _server_problem(peer_certificate(writer))
        if problem:
            raise RenewalError(problem)
        key = generate_key()
        request = csr.build_csr(key, name, _serial(old_cert))
        response = await connection.request(
            "POST", wellknown.SIMPLE_REENROLL,
            base64.b64encode(request.public_bytes(serialization.Encoding.DER)),
            {"Content-Type": wellknown.PKCS10})
        if response.status != 200:
            raise RenewalError(f"/simplereenroll answered HTTP {response.status} {response.text()}")
        try:
            certs = cms.load_certs_only(_b64(response.body))
        except cms.CmsError as exc:
            raise RenewalError(f"/simplereenroll answer rejected: {exc}") from None
    except (TimeoutError, HttpError, OSError, ConnectionError) as exc:
        raise RenewalError(f"EST connection to {locator} failed: {exc}") from None
    finally:
        await connection.close()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    issued = [c for c in certs
              if c.public_key().public_bytes(serialization.Encoding.DER, spki) == mine]
    if len(issued) != 1:
        raise RenewalError("/simplereenroll returned no certificate for the new key")
    new = issued[0]
    if csr.certificate_node_name_text(new) != name:
        raise RenewalError(f"renewed certificate does not keep acp-node-name {name}")
    cas = [c for c in certs if c is not new]
    if all(chain_problem(new, anchor, cas) for anchor in anchors):
        raise RenewalError("renewed certificate does not chain to our trust anchors")
    store_identity(new, key, renewed_anchors(anchors, cas), cert_path=stored.cert_path,
                   key_path=stored.key_path, trust_anchors_path=stored.trust_anchors_path)
    LOG.info("renewed LDevID %s, valid until %s", name, validity(new)[1].isoformat())
    return new


def renewed_anchors(anchors: list[x509.Certificate],
                    cas: list[x509.Certificate]) -> list[x509.Certificate]:
    """The trust anchors after a renewal: those held, then each CA the EST server sent that
    chains to one of them and is not held yet (the renewing registrar's sub-CA, when another
    registrar of the domain renewed us: IKE and TLS peers are shown it from this file)."""
    held = list(anchors)
    for ca in cas:
        if ca not in held and any(chain_problem(ca, anchor, cas) is None for anchor in anchors):
            held.append(ca)
    return held


def _serial(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None

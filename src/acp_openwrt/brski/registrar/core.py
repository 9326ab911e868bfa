"""The ACP registrar (RFC 8995 §5, RFC 7030): BRSKI and EST endpoints over TLS.

A pledge presents its IDevID (verified by the TLS stack against the manufacturer anchors the
registrar is configured with); an enrolled node presents its LDevID (verified against the
domain CA). The registrar checks the pledge's voucher-request, wraps it in its own signed
registrar voucher-request, sends that to the MASA named in the IDevID and relays the voucher.
Only a pledge whose voucher the MASA issued on this connection's registrar gets an
acp-node-name from /csrattrs and a certificate from /simpleenroll; /simplereenroll renews
an LDevID keeping its name. Every refusal is logged with the pledge's serial and the reason.

Status telemetry (voucher_status §5.7, enrollstatus §5.9.4) reaches the registrar through any
join proxy, so it is heard only from the pledge whose enrolment it reports, once: voucher
status over the IDevID the voucher was relayed for; enrollment status over that IDevID (a
failure) or over the LDevID just issued to it (success: the pledge reconnects with it). Others
get 401/403, counted as "status dropped". Text from peers is logged only through `logsafe`.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import datetime as dt
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...identity.address import Scheme, address_from_name
from ...identity.certificate import CertificateError, check_key_strength
from ...identity.membership import check_domain_membership
from ...identity.node_name import parse_acp_node_name
from ...logsafe import logsafe
from .. import cms, csr, idevid, wellknown
from ..http import Request, Response, serve_connection, text_response
from ..pledge.core import PrivateKey, generate_key
from ..store import load_identity, store_identity
from ..tls import chain_problem, peer_certificate, peer_chain, server_context
from ..voucher import Voucher, VoucherError, parse_voucher
from . import masa_client
from .allocation import AllocationError, Allocator
from .domain_ca import NODE_LIFETIME, DomainCA
from .revocation import RevocationStore

LOG = logging.getLogger("acpd.brski.registrar")
VOUCHED_FOR = 600.0  # seconds a voucher authorizes EST enrolment of its serial
STATUS_FOR = 600.0   # seconds a pledge may report on a voucher or an enrolment
STATUS_KINDS = ("voucher_status", "enrollstatus")
MAX_REASON = 300
MAX_TELEMETRY = 64
HANDSHAKE_TIMEOUT = 10.0  # s for a client's TLS handshake
SchemePolicy = Callable[[str, x509.Certificate], Scheme]
SerialPolicy = Callable[[str, x509.Certificate], bool]


def _default_scheme(serial: str, cert: x509.Certificate) -> Scheme:
    return Scheme.ZONE


def _accept_any(serial: str, cert: x509.Certificate) -> bool:
    return True


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data)


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        extension = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        return extension.value.key_identifier
    except x509.ExtensionNotFound:
        return None


def ensure_registrar_identity(ca: DomainCA, allocator: Allocator, cert_path: str | os.PathLike[str],
                              key_path: str | os.PathLike[str], *,
                              lifetime: dt.timedelta = NODE_LIFETIME,
                              ) -> tuple[x509.Certificate, PrivateKey]:
    """The registrar's own ACP certificate (id-kp-cmcRA): loaded if valid, else issued."""
    found = load_identity(cert_path, key_path)
    if found is not None and chain_problem(found[0], ca.certificate) is None:
        return found
    allocation = allocator.allocate(f"registrar-{allocator.registrar_id:012x}")
    key = generate_key()
    cert = ca.issue(key.public_key(), allocation.acp_node_name,
                    address=allocation.address.address, registrar=True, lifetime=lifetime)
    store_identity(cert, key, [ca.certificate], cert_path=cert_path, key_path=key_path,
                   trust_anchors_path=ca.cert_path)
    return cert, key


class Now(NamedTuple):
    """The time a request is handled at, given to the registrar's handlers (it reads no clock):
    `mono` (monotonic seconds) times the windows for status reports and enrolment after a
    voucher; `wall` (UTC) goes into what is signed, issued and recorded."""
    mono: float
    wall: dt.datetime


def read_clock() -> Now:
    """What the edge (serve(), tests) passes as `now`."""
    return Now(time.monotonic(), dt.datetime.now(dt.UTC))


class Registrar:
    """The endpoint handlers; `serve()` puts them behind TLS on a listening socket.

    Every handler takes the request, the TLS client's certificate and `now` (`Now`)."""

    def __init__(self, ca: DomainCA, allocator: Allocator, cert: x509.Certificate,
                 key: PrivateKey, *, masa_context: ssl.SSLContext | None = None,
                 default_masa_url: str | None = None,
                 scheme_policy: SchemePolicy = _default_scheme,
                 serial_policy: SerialPolicy = _accept_any,
                 node_lifetime: dt.timedelta = NODE_LIFETIME,
                 masa_namespace: str | None = None,
                 revocation: RevocationStore | None = None, crl_url: str | None = None) -> None:
        self.ca, self.allocator, self.cert, self.key = ca, allocator, cert, key
        self.masa_context = masa_context or ssl.create_default_context()
        self.default_masa_url = default_masa_url
        self.scheme_policy, self.serial_policy = scheme_policy, serial_policy
        self.node_lifetime = node_lifetime
        self.masa_namespace = masa_namespace
        # revocation.py: issued certificates recorded, revoked ones (and names) get nothing
        # more; crl_url goes into every certificate issued (RFC 8994 §6.2.5.3)
        self.revocation, self.crl_url = revocation, crl_url
        self.vouched: dict[str, float] = {}
        # (kind, pledge) → when the report became due: one report of each kind per enrolment
        self.awaiting_status: dict[tuple[str, str], float] = {}
        self.issued_to: dict[int, str] = {}  # serial of a certificate issued here → pledge
        self.telemetry: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_TELEMETRY)
        self.counters: collections.Counter[str] = collections.Counter()
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self._client_chain: list[x509.Certificate] = []  # of the request being handled
        # why no new address may be allocated now (another registrar with our Registrar-ID,
        # RFC 8994 §6.11.7.2); renewals and serials allocated before are still served
        self.refuse_new: str | None = None

    def status(self) -> dict[str, Any]:
        return {"registrar_id": f"{self.allocator.registrar_id:012x}",
                "acp_node_name": csr.certificate_node_name_text(self.cert),
                "domain_ca": self.ca.certificate.subject.rfc4514_string(),
                "allocations": self.allocator.count(), "counters": dict(self.counters),
                "recent_status": list(self.telemetry)[-8:]}

    # --- dispatch ----------------------------------------------------------------------------

    async def handle(self, request: Request, writer: asyncio.StreamWriter, *,
                     now: Now) -> Response:
        client = peer_certificate(writer)
        # what the client sent above its certificate: the sub-CA of another registrar of the
        # domain that issued its LDevID (renewal through us, RFC 8994 §9.2.3); the handlers
        # read it (_is_ldevid) before their first await
        self._client_chain = [c for c in peer_chain(writer) if c != client] if client else []
        routes = {
            ("POST", wellknown.REQUEST_VOUCHER): self._request_voucher,
            ("POST", wellknown.VOUCHER_STATUS): self._status_report,
            ("POST", wellknown.ENROLL_STATUS): self._status_report,
            ("GET", wellknown.CACERTS): self._cacerts,
            ("GET", wellknown.CSRATTRS): self._csrattrs,
            ("POST", wellknown.SIMPLE_ENROLL): self._simple_enroll,
            ("POST", wellknown.SIMPLE_REENROLL): self._simple_reenroll,
        }
        path = request.path.split("?")[0]
        route = routes.get((request.method, path))
        if route is None:
            return text_response(404, f"no {request.method} {request.path}")
        response = await route(request, client, now)
        self.counters[f"{path.rsplit('/', 1)[-1]} {response.status}"] += 1  # known paths only
        return response

    def _refuse(self, status: int, who: str, reason: str) -> Response:
        LOG.warning("registrar refused %s: %s (HTTP %d)", logsafe(who), logsafe(reason, MAX_REASON),
                    status)
        return text_response(status, reason)

    def _expect_status(self, now: float, pledge: str, *kinds: str) -> None:
        """`pledge` may now send one report of each of `kinds` (within STATUS_FOR)."""
        self.awaiting_status = {key: since for key, since in self.awaiting_status.items()
                                if now - since <= STATUS_FOR}
        self.vouched = {k: since for k, since in self.vouched.items() if now - since <= VOUCHED_FOR}
        for kind in kinds:
            self.awaiting_status[(kind, pledge)] = now
        self.issued_to = {serial: p for serial, p in self.issued_to.items()
                          if ("enrollstatus", p) in self.awaiting_status and p != pledge}

    def _is_ldevid(self, client: x509.Certificate, now: Now) -> bool:
        """Issued by our CA, or (another registrar's sub-CA, RFC 8994 §9.2.4) a member of
        the domain under its trust anchor, through the intermediates the client sent."""
        if chain_problem(client, self.ca.certificate, now=now.wall) is None:
            return True
        if not self.ca.chain:  # an own root CA: nobody else issues in this domain
            return False
        return check_domain_membership(client, self._client_chain, [self.ca.root],
                                       self.allocator.domain, now=now.wall,
                                       for_secure_channel=False).ok

    @staticmethod
    def _who(client: x509.Certificate | None) -> str:
        if client is None:
            return "a client without certificate"
        try:
            return f"pledge {idevid.serial_number(client)}"
        except idevid.IdevidError:
            return logsafe(client.subject.rfc4514_string() or "a client")

    # --- BRSKI -------------------------------------------------------------------------------

    async def _request_voucher(self, request: Request, client: x509.Certificate | None,
                               now: Now) -> Response:
        who = self._who(client)
        if client is None or self._is_ldevid(client, now):
            return self._refuse(401, who, "voucher-request needs the pledge's IDevID as TLS "
                                          "client certificate")
        if request.content_type() != wellknown.VOUCHER_CMS_JSON:
            return self._refuse(415, who, f"media type {request.content_type()!r} is not "
                                          f"{wellknown.VOUCHER_CMS_JSON}")
        try:
            signed = cms.verify(request.body, signer_candidates=[client])
            pledge_request = parse_voucher(signed.content, request=True)
        except (cms.CmsError, VoucherError) as exc:
            return self._refuse(400, who, f"voucher-request rejected: {exc}")
        if signed.signer != client:
            return self._refuse(403, who,
                                "voucher-request is not signed by the TLS client's IDevID")
        if pledge_request.assertion != "proximity":
            return self._refuse(403, who,
                                f"assertion {pledge_request.assertion!r} is not proximity")
        if pledge_request.proximity_registrar_cert != self._cert_der:
            return self._refuse(401, who, "proximity-registrar-cert is not this registrar's "
                                          "certificate (man in the middle?)")
        try:
            serial = idevid.serial_number(client)
            url = idevid.masa_url(client) or self.default_masa_url
        except idevid.IdevidError as exc:
            return self._refuse(404, who, str(exc))
        if pledge_request.serial_number != serial:
            return self._refuse(403, who, f"voucher-request claims serial-number "
                                          f"{pledge_request.serial_number!r}")
        if not self.serial_policy(serial, client):
            return self._refuse(404, who, "serial number not accepted by registrar policy")
        if url is None:
            return self._refuse(404, who, "IDevID names no MASA and no default MASA is configured")
        registrar_request = Voucher(
            request=True, assertion="proximity", serial_number=serial,
            nonce=pledge_request.nonce, created_on=now.wall,
            idevid_issuer=_aki(client), prior_signed_voucher_request=request.body)
        body = cms.sign(registrar_request.to_json(), self.cert, self.key,
                        chain=list(self.ca.cacerts), signing_time=now.wall)
        answer = await masa_client.request_voucher(url, body, self.masa_context,
                                                   namespace=self.masa_namespace)
        if answer.status != 200 or answer.content_type() != wellknown.VOUCHER_CMS_JSON:
            status = answer.status if 400 <= answer.status < 600 else 502
            return self._refuse(status, who,
                                f"MASA {url} answered {answer.status}: {answer.text()}")
        self.vouched[serial] = now.mono  # (the MASA's answer took no time in the core's view)
        self._expect_status(now.mono, serial, *STATUS_KINDS)
        LOG.info("registrar relayed a voucher from MASA %s to %s", logsafe(url), logsafe(who))
        return Response(200, answer.body, {"content-type": wellknown.VOUCHER_CMS_JSON})

    def _status_reporter(self, kind: str, client: x509.Certificate | None,
                         now: Now) -> tuple[str | None, int, str]:
        """(pledge, 0, "") when `client` may report `kind` now, else (None, HTTP status, why)."""
        if client is None:
            return None, 401, f"{kind} needs the pledge's TLS client certificate"
        if self._is_ldevid(client, now):
            pledge = self.issued_to.get(client.serial_number) if kind == "enrollstatus" else None
            if pledge is None:
                return None, 403, (f"{kind} over an LDevID is accepted only over the one "
                                   "issued by this enrolment")
        else:
            try:
                pledge = idevid.serial_number(client)
            except idevid.IdevidError as exc:
                return None, 403, str(exc)
        since = self.awaiting_status.get((kind, pledge))
        if since is None or now.mono - since > STATUS_FOR:
            return None, 403, f"no enrolment of this pledge awaits {kind}"
        return pledge, 0, ""

    async def _status_report(self, request: Request, client: x509.Certificate | None,
                             now: Now) -> Response:
        who = self._who(client)
        kind = request.path.split("?")[0].rsplit("/", 1)[-1]
        pledge, status, refusal = self._status_reporter(kind, client, now)
        if pledge is None:
            self.counters["status dropped"] += 1
            return self._refuse(status, who, refusal)
        try:
            report = json.loads(request.body.decode("utf-8"))
            if not isinstance(report, dict) or not isinstance(report.get("status"), bool) \
                    or not isinstance(report.get("version"), int):
                raise ValueError("needs version (uint) and status (bool)")
        except (UnicodeDecodeError, ValueError) as exc:
            return self._refuse(400, who, f"status report rejected: {exc}")
        del self.awaiting_status[(kind, pledge)]  # one report per voucher, one per enrolment
        reason = logsafe(report.get("reason", ""), MAX_REASON)
        entry = {"kind": kind, "from": who, "status": report["status"], "reason": reason,
                 "time": now.wall.timestamp()}
        self.telemetry.append(entry)
        level = logging.INFO if report["status"] else logging.WARNING
        LOG.log(level, "%s from %s: status %s %s", kind, logsafe(who), report["status"], reason)
        return Response(200)

    # --- EST ---------------------------------------------------------------------------------

    async def _cacerts(self, request: Request, client: x509.Certificate | None,
                       now: Now) -> Response:
        return Response(200, _b64(cms.certs_only(list(self.ca.cacerts))),
                        {"content-type": wellknown.PKCS7_CERTS,
                         "content-transfer-encoding": "base64"})

    def _name_for(self, client: x509.Certificate | None,
                  now: Now) -> tuple[str | None, str | None, str]:
        """(acp-node-name, serial, refusal) for the TLS client."""
        if client is None:
            return None, None, "EST needs a TLS client certificate"
        if self._is_ldevid(client, now):
            revoked = self.revocation.refusal(client) if self.revocation else None
            if revoked is not None:
                return None, None, revoked
            name = csr.certificate_node_name_text(client)
            return (name, None, "" if name else "LDevID carries no acp-node-name")
        try:
            serial = idevid.serial_number(client)
        except idevid.IdevidError as exc:
            return None, None, str(exc)
        since = self.vouched.get(serial)
        if since is None or now.mono - since > VOUCHED_FOR:
            return None, serial, "no voucher was issued for this pledge (request one first)"
        if self.refuse_new is not None and not self.allocator.holds(serial):
            return None, serial, self.refuse_new
        try:
            allocation = self.allocator.allocate(serial, self.scheme_policy(serial, client))
        except AllocationError as exc:
            return None, serial, str(exc)
        if self.revocation is not None and self.revocation.name_revoked(allocation.acp_node_name):
            return None, serial, f"acp-node-name {allocation.acp_node_name} is revoked"
        return allocation.acp_node_name, serial, ""

    async def _csrattrs(self, request: Request, client: x509.Certificate | None,
                        now: Now) -> Response:
        name, _, refusal = self._name_for(client, now)
        if name is None:
            return self._refuse(403, self._who(client), refusal)
        return Response(200, _b64(csr.encode_csr_attrs(name)),
                        {"content-type": wellknown.CSRATTRS_TYPE,
                         "content-transfer-encoding": "base64"})

    async def _simple_enroll(self, request: Request, client: x509.Certificate | None,
                             now: Now) -> Response:
        return await self._enroll(request, client, now, renewal=False)

    async def _simple_reenroll(self, request: Request, client: x509.Certificate | None,
                               now: Now) -> Response:
        if client is None or not self._is_ldevid(client, now):
            return self._refuse(403, self._who(client), "re-enrolment needs a valid LDevID")
        return await self._enroll(request, client, now, renewal=True)

    async def _enroll(self, request: Request, client: x509.Certificate | None, now: Now, *,
                      renewal: bool) -> Response:
        who = self._who(client)
        name, serial, refusal = self._name_for(client, now)
        if name is None:
            return self._refuse(403, who, refusal)
        if request.content_type() != wellknown.PKCS10:
            return self._refuse(415, who, f"CSR media type {request.content_type()!r} "
                                          f"is not {wellknown.PKCS10}")
        try:
            der = base64.b64decode(b"".join(request.body.split()), validate=True)
            request_csr = csr.load_csr(der)
            asked = csr.csr_node_name(request_csr)
            check_key_strength(request_csr.public_key())
        except (binascii.Error, ValueError, csr.CsrError, CertificateError) as exc:
            return self._refuse(400, who, f"CSR rejected: {exc}")
        if asked != name:
            return self._refuse(400, who, f"CSR asks for acp-node-name {asked!r}, "
                                          f"the registrar assigned {name!r}")
        if serial is None and client is not None:
            serials = client.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
            serial = str(serials[0].value) if serials else None
        address = address_from_name(parse_acp_node_name(name)).address
        cert = self.ca.issue(request_csr.public_key(), name, address=address,
                             serial_number=serial, lifetime=self.node_lifetime, now=now.wall,
                             crl_url=self.crl_url)
        if self.revocation is not None:
            self.revocation.record_issued(cert)
        pledge = serial or name
        self._expect_status(now.mono, pledge, "enrollstatus")
        self.issued_to[cert.serial_number] = pledge  # its enrollstatus may come over this cert
        LOG.info("registrar %s %s for %s (%s)", "renewed" if renewal else "issued", name,
                 logsafe(who), address)
        # the CAs between the certificate and the root (none for an own root CA)
        return Response(200, _b64(cms.certs_only([cert, *self.ca.cacerts[:-1]])),
                        {"content-type": wellknown.PKCS7_CERTS,
                         "content-transfer-encoding": "base64"})

    # --- serving -----------------------------------------------------------------------------

    def ssl_context(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                    idevid_anchor_paths: Sequence[str | os.PathLike[str]]) -> ssl.SSLContext:
        """Server TLS: our certificate; clients may present an IDevID (manufacturer anchors)
        or an LDevID (the domain CA)."""
        return server_context(cert_path, key_path,
                              client_ca_paths=[*idevid_anchor_paths, self.ca.cert_path])

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer,
                               lambda request, w: self.handle(request, w, now=read_clock()))

    async def serve(self, context: ssl.SSLContext, *, sock: Any = None, host: str | None = None,
                    port: int = 0) -> asyncio.base_events.Server:
        if sock is not None:
            return await asyncio.start_server(self._connection, sock=sock, ssl=context,
                                              ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        return await asyncio.start_server(self._connection, host, port, ssl=context,
                                          ssl_handshake_timeout=HANDSHAKE_TIMEOUT)

    async def serve_accepted(self, context: ssl.SSLContext, sock: Any) -> None:
        """One TCP connection accepted elsewhere (acpd, which hands it to the registrar
        worker): TLS as server, then the requests until the client is done."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            LOG.info("registrar: TLS with a client failed: %s", logsafe(str(exc)))
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._connection(reader, writer)

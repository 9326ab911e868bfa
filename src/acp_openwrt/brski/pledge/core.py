"""The pledge (RFC 8995 §5): one enrolment attempt as a sans-I/O state machine.

`PledgeAttempt` is told what the network did (TLS is up with this registrar certificate; this
HTTP response arrived) and answers with what to do next: send this request, wait and resend,
store this identity, or give up for this reason. It never touches a socket or a clock: every
input carries `now` (docs/core-contract.md; here the calendar time, since vouchers and
certificates are checked against it), so every refusal path is a plain unit test; `client.py` is
the asyncio edge, and the back-off between attempts is `proxies.ProxyBook`'s timer.

Order (§5.2 to §5.9): voucher-request → voucher checked against the manufacturer anchors
(signature, serial, nonce, expiry, idevid-issuer) → the registrar's TLS certificate must chain
to pinned-domain-cert → voucher status → /cacerts → /csrattrs (the acp-node-name) →
/simpleenroll with a fresh key → the issued certificate is checked → Enrolled.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .. import idevid, wellknown
from ..http import Response
from ..tls import chain_problem
from ..voucher import Voucher, VoucherError, new_nonce, parse_voucher

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
MAX_RETRY_AFTER = 60.0  # §5.6: the pledge caps Retry-After at 60 s
MAX_RETRIES = 3
STATUS_VERSION = 1


class State(enum.StrEnum):
    CONNECTING = "connecting"
    VOUCHER = "requesting-voucher"
    VOUCHER_STATUS = "voucher-status"
    CACERTS = "cacerts"
    CSRATTRS = "csrattrs"
    ENROLL = "enrolling"
    REPORT_FAILURE = "reporting-failure"
    ENROLLED = "enrolled"
    FAILED = "failed"


@dataclass(frozen=True)
class PledgeIdentity:
    """The factory identity: IDevID, its key and the manufacturer's voucher anchors."""

    cert: x509.Certificate
    key: PrivateKey
    masa_anchors: tuple[x509.Certificate, ...]

    @property
    def serial_number(self) -> str:
        return idevid.serial_number(self.cert)


@dataclass(frozen=True)
class SendRequest:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Wait this long, then call resend() (202 + Retry-After)."""
    seconds: float


@dataclass(frozen=True)
class Enrolled:
    cert: x509.Certificate
    key: PrivateKey
    trust_anchors: tuple[x509.Certificate, ...]
    acp_node_name: str
    pinned_domain_cert: x509.Certificate


@dataclass(frozen=True)
class Refused:
    reason: str


Action = SendRequest | Wait | Enrolled | Refused


def _status_body(status: bool, reason: str | None) -> bytes:
    body: dict[str, object] = {"version": STATUS_VERSION, "status": status}
    if reason:
        body["reason"] = reason
    return json.dumps(body).encode()


def _b64_body(response: Response) -> bytes:
    try:
        return base64.b64decode(b"".join(response.body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Refusal("EST response body is not base64") from None


class _Refusal(Exception):
    """Internal: a check failed; the message is the logged reason."""


def generate_key(key_type: str = "ec-p256") -> PrivateKey:
    """The LDevID key: ec-p256 (default), ec-p384 or rsa-2048 (RFC 8994 §6.2.1 minimums)."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown LDevID key type {key_type!r} (ec-p256, ec-p384, rsa-2048)")


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        extension = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        return extension.value.key_identifier
    except x509.ExtensionNotFound:
        return None


class PledgeAttempt:
    """One attempt through one proxy (one TLS connection); see the module docstring."""

    def __init__(self, identity: PledgeIdentity, *, accept_nonceless: bool = True,
                 clock_trusted: bool = True, nonce: str | None = None,
                 key_type: str = "ec-p256") -> None:
        self.identity = identity
        self.accept_nonceless = accept_nonceless
        self.clock_trusted = clock_trusted
        self.nonce = nonce or new_nonce()
        self.key_type = key_type
        self.state = State.CONNECTING
        self.reason: str | None = None
        self.registrar_cert: x509.Certificate | None = None
        self.registrar_chain: tuple[x509.Certificate, ...] = ()
        self.voucher: Voucher | None = None
        self.pinned: x509.Certificate | None = None
        self.anchors: tuple[x509.Certificate, ...] = ()
        self.acp_node_name: str | None = None
        self._last: SendRequest | None = None
        self._retries = 0
        self._key: PrivateKey | None = None
        self._failure: str | None = None

    # --- inputs ------------------------------------------------------------------------------

    def connected(self, registrar_cert: x509.Certificate | None,
                  chain: Sequence[x509.Certificate] = (), *, now: dt.datetime) -> Action:
        """TLS is up (provisionally); build and send the signed voucher-request."""
        from .. import cms  # the BRSKI work: only while enrolling
        if self.state is not State.CONNECTING:
            return self._fail(f"connected() in state {self.state.value}")
        if registrar_cert is None:
            return self._fail("registrar sent no TLS certificate")
        self.registrar_cert, self.registrar_chain = registrar_cert, tuple(chain[1:])
        request = Voucher(request=True, assertion="proximity",
                          serial_number=self.identity.serial_number,
                          nonce=self.nonce, created_on=now,
                          proximity_registrar_cert=registrar_cert.public_bytes(
                              serialization.Encoding.DER))
        signed = cms.sign(request.to_json(), self.identity.cert, self.identity.key,
                          signing_time=now)
        self.state = State.VOUCHER
        return self._send("POST", wellknown.REQUEST_VOUCHER, signed, {
            "Content-Type": wellknown.VOUCHER_CMS_JSON, "Accept": wellknown.VOUCHER_CMS_JSON})

    def resend(self) -> Action:
        """After a Wait: the identical request again (same nonce, §5.6)."""
        if self._last is None:
            return self._fail("nothing to resend")
        return self._last

    def response(self, response: Response, *, now: dt.datetime) -> Action:
        """The answer to the last request, received at `now`."""
        try:
            if response.status == 202 and self.state in (State.VOUCHER, State.ENROLL):
                return self._retry(response)
            handler = {
                State.VOUCHER: self._on_voucher, State.VOUCHER_STATUS: self._on_voucher_status,
                State.CACERTS: self._on_cacerts, State.CSRATTRS: self._on_csrattrs,
                State.ENROLL: self._on_enroll, State.REPORT_FAILURE: self._on_reported,
            }.get(self.state)
            if handler is None:
                return self._fail(f"unexpected response in state {self.state.value}")
            return handler(response, now)
        except _Refusal as refusal:
            return self._report(str(refusal))

    # --- steps -------------------------------------------------------------------------------

    def _on_voucher(self, response: Response, now: dt.datetime) -> Action:
        if response.status != 200:
            return self._fail(f"registrar refused the voucher-request: HTTP {response.status} "
                              f"{response.text()}")
        if response.content_type() != wellknown.VOUCHER_CMS_JSON:
            return self._fail(f"voucher has media type {response.content_type()!r}")
        self.voucher, self.pinned = self._check_voucher(response.body, now)
        assert self.registrar_cert is not None  # connected() refused a registrar without one
        problem = chain_problem(self.registrar_cert, self.pinned, self.registrar_chain, now,
                                check_time=self.clock_trusted)
        if problem:
            raise _Refusal(f"registrar TLS certificate does not match the pinned domain "
                           f"certificate: {problem}")
        self.state = State.VOUCHER_STATUS
        return self._send("POST", wellknown.VOUCHER_STATUS, _status_body(True, None),
                          {"Content-Type": wellknown.JSON})

    def _check_voucher(self, body: bytes, now: dt.datetime) -> tuple[Voucher, x509.Certificate]:
        from .. import cms
        try:
            signed = cms.verify(body)
        except cms.CmsError as exc:
            raise _Refusal(f"voucher CMS rejected: {exc}") from None
        problems = [chain_problem(signed.signer, anchor, signed.certificates, now,
                                  check_time=self.clock_trusted)
                    for anchor in self.identity.masa_anchors]
        if all(problems):
            raise _Refusal("voucher not signed by a trusted MASA: "
                           f"{problems[0] if problems else 'no anchors'}")
        try:
            voucher = parse_voucher(signed.content)
        except VoucherError as exc:
            raise _Refusal(f"voucher rejected: {exc}") from None
        if voucher.serial_number != self.identity.serial_number:
            raise _Refusal(f"voucher is for serial-number {voucher.serial_number!r}, "
                           f"not {self.identity.serial_number!r}")
        if voucher.nonce is None:
            if not self.accept_nonceless:
                raise _Refusal("voucher has no nonce and nonceless vouchers are not accepted")
        elif voucher.nonce != self.nonce:
            raise _Refusal(f"voucher nonce {voucher.nonce!r} is not ours ({self.nonce!r})")
        if self.clock_trusted and voucher.expires_on is not None and now > voucher.expires_on:
            raise _Refusal(f"voucher expired on {voucher.expires_on.isoformat()}")
        issuer = _aki(self.identity.cert)
        if voucher.idevid_issuer is not None and issuer is not None \
                and voucher.idevid_issuer != issuer:
            raise _Refusal("voucher idevid-issuer does not match our IDevID's issuer")
        try:
            pinned = x509.load_der_x509_certificate(voucher.pinned_domain_cert or b"")
        except ValueError:
            raise _Refusal("voucher pinned-domain-cert is not a DER certificate") from None
        return voucher, pinned

    def _on_voucher_status(self, response: Response, now: dt.datetime) -> Action:
        self.state = State.CACERTS  # the answer to telemetry is ignored (§5.7)
        return self._send("GET", wellknown.CACERTS)

    def _on_cacerts(self, response: Response, now: dt.datetime) -> Action:
        from .. import cms
        anchors: list[x509.Certificate] = []
        below: list[x509.Certificate] = []
        if response.status == 200:
            try:
                certs = cms.load_certs_only(_b64_body(response))
            except cms.CmsError as exc:
                raise _Refusal(f"/cacerts answer rejected: {exc}") from None
            anchors = [c for c in certs if c.subject == c.issuer]
            below = [c for c in certs if c.subject != c.issuer]
        assert self.pinned is not None and self.registrar_cert is not None
        if not anchors:
            anchors, below = [self.pinned], []
        # The anchors must be the ones the voucher vouched for: the pinned certificate must
        # chain to one of them (or be one).
        if all(chain_problem(self.pinned, a, below, now) for a in anchors):
            raise _Refusal("/cacerts holds no anchor for the pinned domain certificate")
        # An operator's sub-CA registrar (RFC 7030 §4.1.3: /cacerts is the chain): the CAs
        # below the root are kept with it, so IKE and TLS peers verify leaf → CA → root
        # from the one trust anchors file; only those that chain to a kept root.
        kept = [c for c in below if any(chain_problem(c, a, below, now) is None
                                        for a in anchors)]
        self.anchors = (*anchors, *kept)
        self.state = State.CSRATTRS
        return self._send("GET", wellknown.CSRATTRS)

    def _on_csrattrs(self, response: Response, now: dt.datetime) -> Action:
        from .. import csr
        if response.status != 200:
            raise _Refusal(f"/csrattrs answered HTTP {response.status} {response.text()}")
        try:
            name = csr.decode_csr_attrs(_b64_body(response))
        except csr.CsrError as exc:
            raise _Refusal(f"/csrattrs rejected: {exc}") from None
        if name is None:
            raise _Refusal("/csrattrs names no acp-node-name")
        from ...identity.node_name import NodeNameError, parse_acp_node_name
        try:
            parsed = parse_acp_node_name(name)
        except NodeNameError as exc:
            raise _Refusal(f"/csrattrs acp-node-name rejected: {exc}") from None
        if not parsed.has_address:
            raise _Refusal(f"/csrattrs acp-node-name {name} carries no ACP address")
        self.acp_node_name = name
        self._key = generate_key(self.key_type)
        request = csr.build_csr(self._key, name, self.identity.serial_number)
        body = base64.b64encode(request.public_bytes(serialization.Encoding.DER))
        self.state = State.ENROLL
        return self._send("POST", wellknown.SIMPLE_ENROLL, body,
                          {"Content-Type": wellknown.PKCS10})

    def _on_enroll(self, response: Response, now: dt.datetime) -> Action:
        from .. import cms, csr
        if response.status != 200:
            raise _Refusal(f"/simpleenroll answered HTTP {response.status} {response.text()}")
        try:
            certs = cms.load_certs_only(_b64_body(response))
        except cms.CmsError as exc:
            raise _Refusal(f"/simpleenroll answer rejected: {exc}") from None
        assert self._key is not None and self.acp_node_name is not None
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        mine = self._key.public_key().public_bytes(serialization.Encoding.DER, spki)
        issued = [c for c in certs
                  if c.public_key().public_bytes(serialization.Encoding.DER, spki) == mine]
        if len(issued) != 1:
            raise _Refusal("/simpleenroll returned no certificate for our key")
        cert = issued[0]
        if csr.certificate_node_name_text(cert) != self.acp_node_name:
            raise _Refusal(f"issued certificate does not carry acp-node-name {self.acp_node_name}")
        others = [c for c in certs if c is not cert]
        problems = [chain_problem(cert, a, others, now, check_time=self.clock_trusted)
                    for a in self.anchors]
        if all(problems):
            raise _Refusal(f"issued certificate does not chain to the domain CA: {problems[0]}")
        self.state = State.ENROLLED
        assert self.pinned is not None
        return Enrolled(cert, self._key, self.anchors, self.acp_node_name, self.pinned)

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes = b"",
              headers: dict[str, str] | None = None) -> SendRequest:
        self._retries = 0 if self._last is None or self._last.path != path else self._retries
        self._last = SendRequest(method, path, body, dict(headers or {}))
        return self._last

    def _retry(self, response: Response) -> Action:
        self._retries += 1
        if self._retries > MAX_RETRIES:
            path = self._last.path if self._last else "?"
            return self._fail(f"registrar kept answering 202 to {path}")
        text = response.headers.get("retry-after", "")
        seconds = float(text) if text.isdigit() else MAX_RETRY_AFTER
        return Wait(min(max(seconds, 0.0), MAX_RETRY_AFTER))

    def _report(self, reason: str) -> Action:
        """A check failed after TLS: tell the registrar (status false), then give up."""
        self._failure = reason
        path = wellknown.VOUCHER_STATUS if self.state in (State.VOUCHER, State.VOUCHER_STATUS) \
            else wellknown.ENROLL_STATUS
        self.state = State.REPORT_FAILURE
        return self._send("POST", path, _status_body(False, reason),
                          {"Content-Type": wellknown.JSON})

    def _on_reported(self, response: Response, now: dt.datetime) -> Action:
        return self._fail(self._failure or "failed")

    def _fail(self, reason: str) -> Refused:
        self.state, self.reason = State.FAILED, reason
        return Refused(reason)

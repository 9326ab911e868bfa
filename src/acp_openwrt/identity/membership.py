"""The ACP domain membership check (RFC 8994 §6.2.3), run on every peer certificate.

Rules covered here:
  2. RFC 5280 path validation to one of *our* trust anchors, with 0, 1 or 2 intermediates
     (§6.2.4), including the validity periods of every certificate on the path;
  4. a syntactically valid acp-node-name whose acp-domain-name equals ours, compared
     case-insensitively (the routing subdomain is ignored);
  5. for ACP secure channels only: the acp-node-name carries an acp-address (32HEXDIG or "0").
Rule 1 (proof of possession of the private key) belongs to the SA protocol (IKEv2, TLS).
Rule 3 (revocation) is checked apart, where the CRLs are: `revocation/` keeps the domain's CRL
(fetched from the registrar's distribution point across the ACP, §6.7 back-off when it is
unreachable) and the channels refuse and close revoked peers (`channels/revocation.py`).

Why our own chain walk instead of cryptography.x509.verification.PolicyBuilder: tried with
cryptography 48, its client verifier accepts lab-PKI ACP certificates with an otherName SAN, but
it applies the web-PKI profile (a leaf without subjectAltName, e.g. a legacy certificate whose
name is only in the subject emailAddress, is refused; the profile's algorithm and extension
rules are not RFC 8994's), and the client verifier exists only from cryptography 43 on, while
we support 41. The walk below is small and checks what §6.2 asks: issuer/subject chaining,
signatures, validity, basicConstraints, keyUsage keyCertSign, pathLenConstraint, unknown
critical extensions, key and signature-hash strength.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .certificate import (
    CertificateError,
    as_certificate,
    find_acp_node_name,
    key_strength_problem,
    signature_hash_problem,
    validity,
)
from .node_name import AcpNodeName

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

MAX_INTERMEDIATES = 2


@dataclass(frozen=True)
class MembershipResult:
    """The verdict on a peer certificate; reason says why (also when ok)."""

    ok: bool
    reason: str
    node_name: AcpNodeName | None = None
    carrier: str | None = None
    path: tuple[x509.Certificate, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return self.ok


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string() or f"serial {cert.serial_number}")


def _time_problem(cert: x509.Certificate, now: dt.datetime, what: str) -> str | None:
    before, after = validity(cert)
    if now > after:
        return f"{what} expired at {_stamp(after)}"
    if now < before:
        return f"{what} not valid before {_stamp(before)}"
    return None


def _critical_problem(cert: x509.Certificate, what: str) -> str | None:
    """RFC 5280 §6.1.3: an unrecognised critical extension makes the certificate unusable."""
    try:
        extensions = list(cert.extensions)
    except ValueError as exc:
        return f"{what} has undecodable extensions ({exc})"
    for ext in extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            return f"{what} has an unknown critical extension {ext.oid.dotted_string}"
    return None


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _issuer_problem(ca: x509.Certificate, what: str, below: int, now: dt.datetime) -> str | None:
    """Can this CA certificate issue a certificate that has `below` intermediates under it?"""
    label = f"{what} {_label(ca)}"
    problem = (_time_problem(ca, now, label) or _critical_problem(ca, label)
               or _with_label(label, key_strength_problem(ca.public_key())))
    if problem:
        return problem
    constraints = _extension(ca, x509.BasicConstraints)
    if constraints is None:
        if what != "trust anchor":  # a v1 self-signed root may lack it; an intermediate not
            return f"{label} has no basicConstraints (not a CA)"
    else:
        if not constraints.ca:
            return f"{label} is not a CA (basicConstraints cA is false)"
        if constraints.path_length is not None and below > constraints.path_length:
            return (f"{label} allows {constraints.path_length} intermediate(s) below it, "
                    f"path has {below}")
    usage = _extension(ca, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return f"{label} keyUsage lacks keyCertSign"
    return None


def _with_label(label: str, problem: str | None) -> str | None:
    return f"{label}: {problem}" if problem else None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return f"signature does not verify with the key of {_label(issuer)}"
    except (ValueError, TypeError) as exc:
        return f"cannot verify signature with {_label(issuer)} ({exc})"
    return None


def _build_path(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate], now: dt.datetime,
                ) -> tuple[tuple[x509.Certificate, ...] | None, list[str]]:
    """Depth-first search for leaf -> (up to 2 intermediates) -> anchor; failures explain why."""
    failures: list[str] = []

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        current = path[-1]
        depth = len(path) - 1  # intermediates already below the next issuer
        for anchor in anchors:
            if anchor.subject != current.issuer:
                continue
            problem = _signed_by(current, anchor) or _issuer_problem(
                anchor, "trust anchor", depth, now)
            if problem is None:
                return path + [anchor]
            failures.append(problem)
        for ca in intermediates:
            if ca.subject != current.issuer or ca in path or ca in anchors:
                continue
            if depth >= MAX_INTERMEDIATES:
                failures.append(f"more than {MAX_INTERMEDIATES} intermediate CAs needed")
                continue
            label = f"intermediate CA {_label(ca)}"
            problem = (_signed_by(current, ca) or _issuer_problem(ca, "intermediate CA", depth, now)
                       or _with_label(label, signature_hash_problem(ca)))
            if problem:
                failures.append(problem)
                continue
            found = extend(path + [ca])
            if found:
                return found
        return None

    found = extend([leaf])
    return (tuple(found) if found else None), failures


def check_domain_membership(
    peer_cert: x509.Certificate | bytes,
    peer_chain: Sequence[x509.Certificate | bytes],
    trust_anchors: Sequence[x509.Certificate | bytes],
    our_domain: str,
    *,
    now: dt.datetime | None = None,
    for_secure_channel: bool = True,
) -> MembershipResult:
    """Apply §6.2.3 rules 2, 4 and (for secure channels) 5 to a peer certificate.

    peer_chain holds the intermediates the peer sent, in any order (extra certificates are
    ignored). now=None means the system clock; a naive datetime is taken as UTC.
    Unreadable certificates raise CertificateError; every policy refusal is a result with
    ok=False and a one-line reason.
    """
    leaf = as_certificate(peer_cert)
    intermediates = [as_certificate(c) for c in peer_chain]
    anchors = [as_certificate(c) for c in trust_anchors]
    moment = _utc(now) if now is not None else dt.datetime.now(dt.UTC)

    def refuse(reason: str, node: AcpNodeName | None = None, carrier: str | None = None,
               ) -> MembershipResult:
        return MembershipResult(False, reason, node, carrier)

    problem = (_time_problem(leaf, moment, "certificate") or key_strength_problem(leaf.public_key())
               or signature_hash_problem(leaf) or _critical_problem(leaf, "certificate"))
    if problem:
        return refuse(problem)
    if not anchors:
        return refuse("not signed by a trusted anchor (no trust anchors configured)")
    path, failures = _build_path(leaf, intermediates, anchors, moment)
    if path is None:
        detail = failures[0] if failures else (
            f"issuer {_label_name(leaf.issuer)} is neither a trust anchor nor in the chain")
        return refuse(f"not signed by a trusted anchor: {detail}")

    try:
        found = find_acp_node_name(leaf)
    except CertificateError as exc:
        return refuse(str(exc))
    if found is None:
        return refuse("no acp-node-name in certificate")
    node, carrier = found.node_name, found.carrier
    if node.domain.lower() != our_domain.lower():
        return refuse(f"acp-domain-name {node.domain} differs from ours {our_domain}",
                      node, carrier)
    if for_secure_channel and not node.can_build_channels:
        return refuse("acp-node-name has no acp-address (not usable for secure channels)",
                      node, carrier)
    hops = len(path) - 2
    return MembershipResult(
        True, f"member of ACP domain {node.domain} (via {carrier}, {hops} intermediate(s))",
        node, carrier, path)


def _label_name(name: x509.Name) -> str:
    return repr(name.rfc4514_string())

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

The walk reads certificates with cert_reader.py and checks signatures with signature.py, so an
enrolled node checks its peers with no cryptography loaded (issue 19: about 8 MB of RSS
otherwise); cryptography's certificates are taken too (read again from their DER).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import signature
from .cert_name import find_acp_node_name
from .cert_reader import (
    KEY_CERT_SIGN,
    KNOWN_EXTENSIONS,
    OTHER_KEYS,
    Certificate,
    CertificateError,
    Name,
    PublicKey,
    as_certificate,
    validity,
)
from .node_name import AcpNodeName

MAX_INTERMEDIATES = 2
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
ACCEPTED_SIGNATURE_HASHES = ("sha256", "sha384", "sha512")


@dataclass(frozen=True)
class MembershipResult:
    """The verdict on a peer certificate; reason says why (also when ok)."""

    ok: bool
    reason: str
    node_name: AcpNodeName | None = None
    carrier: str | None = None
    path: tuple[Certificate, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return self.ok


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(cert: Certificate) -> str:
    return repr(cert.subject.rfc4514_string() or f"serial {cert.serial_number}")


def _time_problem(cert: Certificate, now: dt.datetime, what: str) -> str | None:
    before, after = validity(cert)
    if now > after:
        return f"{what} expired at {_stamp(after)}"
    if now < before:
        return f"{what} not valid before {_stamp(before)}"
    return None


def _critical_problem(cert: Certificate, what: str) -> str | None:
    """RFC 5280 §6.1.3: an unrecognised critical extension makes the certificate unusable."""
    for ext in cert.extensions:
        if ext.critical and ext.oid not in KNOWN_EXTENSIONS:
            return f"{what} has an unknown critical extension {ext.oid}"
    return None


def key_strength_problem(key: PublicKey) -> str | None:
    """Why a public key is not acceptable for ACP certificates (§6.2.1), or None."""
    if key.kind == "rsa":
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits is too small (minimum {MIN_RSA_BITS})"
        return None
    if key.kind == "ec":
        if key.curve is None:
            return "EC key on an unknown curve is not accepted"
        if key.key_size < MIN_EC_BITS:
            return (f"EC key on {key.curve} ({key.key_size} bits) "
                    f"is too small (minimum {MIN_EC_BITS})")
        return None
    name = OTHER_KEYS.get(key.algorithm, f"public key algorithm {key.algorithm}")
    return f"{name} keys are not accepted (RSA or ECDSA only)"


def signature_hash_problem(cert: Certificate) -> str | None:
    """Why the certificate's signature hash is not acceptable (SHA-256/384/512 only), or None."""
    try:
        name = signature.signature_hash(cert.signature_algorithm_oid, cert.signature_parameters)
    except signature.UnsupportedSignature:
        return f"signature algorithm {cert.signature_algorithm_oid} is not supported"
    if name not in ACCEPTED_SIGNATURE_HASHES:
        return f"signature hash {name} is not accepted (SHA-256/384/512 only)"
    return None


def _issuer_problem(ca: Certificate, what: str, below: int, now: dt.datetime) -> str | None:
    """Can this CA certificate issue a certificate that has `below` intermediates under it?"""
    label = f"{what} {_label(ca)}"
    problem = (_time_problem(ca, now, label) or _critical_problem(ca, label)
               or _with_label(label, key_strength_problem(ca.public_key)))
    if problem:
        return problem
    constraints = ca.basic_constraints
    if constraints is None:
        if what != "trust anchor":  # a v1 self-signed root may lack it; an intermediate not
            return f"{label} has no basicConstraints (not a CA)"
    else:
        is_ca, path_length = constraints
        if not is_ca:
            return f"{label} is not a CA (basicConstraints cA is false)"
        if path_length is not None and below > path_length:
            return f"{label} allows {path_length} intermediate(s) below it, path has {below}"
    if ca.key_usage is not None and not ca.key_usage & KEY_CERT_SIGN:
        return f"{label} keyUsage lacks keyCertSign"
    return None


def _with_label(label: str, problem: str | None) -> str | None:
    return f"{label}: {problem}" if problem else None


def signature_problem(cert: Certificate, issuer: Certificate) -> str | None:
    """Why `issuer` did not sign `cert` (its signature, checked), or None when it did."""
    try:
        signature.verify(cert.tbs_bytes, cert.signature_algorithm_oid,
                         cert.signature_parameters, cert.signature, issuer.public_key)
    except signature.InvalidSignature:
        return f"signature does not verify with the key of {_label(issuer)}"
    except signature.UnsupportedSignature as exc:
        return f"cannot verify signature with {_label(issuer)} ({exc})"
    return None


def _build_path(leaf: Certificate, intermediates: Sequence[Certificate],
                anchors: Sequence[Certificate], now: dt.datetime,
                ) -> tuple[tuple[Certificate, ...] | None, list[str]]:
    """Depth-first search for leaf -> (up to 2 intermediates) -> anchor; failures explain why."""
    failures: list[str] = []

    def extend(path: list[Certificate]) -> list[Certificate] | None:
        current = path[-1]
        depth = len(path) - 1  # intermediates already below the next issuer
        for anchor in anchors:
            if anchor.subject != current.issuer:
                continue
            problem = signature_problem(current, anchor) or _issuer_problem(
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
            problem = (signature_problem(current, ca)
                       or _issuer_problem(ca, "intermediate CA", depth, now)
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
    peer_cert: Any,
    peer_chain: Sequence[Any],
    trust_anchors: Sequence[Any],
    our_domain: str,
    *,
    now: dt.datetime | None = None,
    for_secure_channel: bool = True,
) -> MembershipResult:
    """Apply §6.2.3 rules 2, 4 and (for secure channels) 5 to a peer certificate.

    Certificates are cert_reader's, cryptography's or PEM/DER bytes. peer_chain holds the
    intermediates the peer sent, in any order (extra certificates are ignored). now=None means
    the system clock; a naive datetime is taken as UTC. Unreadable certificates raise
    CertificateError; every policy refusal is a result with ok=False and a one-line reason.
    """
    leaf = as_certificate(peer_cert)
    intermediates = [as_certificate(c) for c in peer_chain]
    anchors = [as_certificate(c) for c in trust_anchors]
    moment = _utc(now) if now is not None else dt.datetime.now(dt.UTC)

    def refuse(reason: str, node: AcpNodeName | None = None, carrier: str | None = None,
               ) -> MembershipResult:
        return MembershipResult(False, reason, node, carrier)

    problem = (_time_problem(leaf, moment, "certificate") or key_strength_problem(leaf.public_key)
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


def _label_name(name: Name) -> str:
    return repr(name.rfc4514_string())

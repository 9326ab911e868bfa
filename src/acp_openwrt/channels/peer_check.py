"""The §6.2.3 membership check on the certificate behind a new SA (strongSwan's own check is
only "chains to our CA"; ours adds the acp-node-name, its domain, its address and validity)."""
from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..identity.address import address_from_name
from ..identity.cert_reader import Certificate, CertificateError, as_certificate, validity
from ..identity.membership import check_domain_membership
from .ike_identity import identity_problem


def _issued(cert: Certificate) -> dt.datetime:
    return validity(cert)[0]


@dataclass(frozen=True)
class PeerVerdict:
    ok: bool
    reason: str
    node_name: str | None = None
    address: ipaddress.IPv6Address | None = None
    cas: tuple[Certificate, ...] = ()  # the verified path above the peer's certificate


def check_peer(remote_id: str, leaves: Sequence[bytes], others: Sequence[bytes],
               anchors: Sequence[Certificate], domain: str,
               now: dt.datetime | None = None,
               revoked: Callable[[Certificate], str | None] | None = None) -> PeerVerdict:
    """Accept if one of the certificates charon holds for `remote_id` passes.

    `revoked` (RFC 8994 §6.2.3 rule 3): why a certificate is revoked according to the CRLs
    the node holds, or None (channels/revocation.py).

    Several can match after a peer re-enrolled; the newest is tried first, and the first
    refusal's reason is the one reported when none passes.
    """
    if not leaves:
        return PeerVerdict(False, f"no certificate for peer identity {remote_id} in charon")
    try:
        certs = sorted((as_certificate(c) for c in leaves), key=_issued, reverse=True)
    except CertificateError as exc:
        return PeerVerdict(False, f"unreadable peer certificate: {exc}")
    chain = []
    for other in others:  # every other certificate charon holds: candidate intermediates only
        try:
            chain.append(as_certificate(other))
        except CertificateError:
            continue  # one charon cannot use either way must not fail every peer check
    first: PeerVerdict | None = None
    for cert in certs:
        result = check_domain_membership(cert, chain, list(anchors), domain, now=now,
                                         for_secure_channel=True)
        revocation = revoked(cert) if revoked is not None and result.ok else None
        if revocation is not None:
            verdict = PeerVerdict(False, revocation)
        elif not result.ok or result.node_name is None:
            verdict = PeerVerdict(False, result.reason)
        else:
            address = address_from_name(result.node_name).address
            problem = identity_problem(remote_id, address)
            verdict = (PeerVerdict(False, problem) if problem else
                       PeerVerdict(True, result.reason, result.node_name.format(), address,
                                   tuple(result.path[1:])))
        if verdict.ok:
            return verdict
        first = first or verdict
    assert first is not None
    return first

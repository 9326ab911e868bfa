"""RFC 8994 §6.2.3 rule 3 on the channels: a revoked peer gets no channel, and when the CRL
learns a revocation every channel to that peer is closed (even the only path to the CRL).

The revocation part publishes `RevocationUpdated` with every revoked certificate of the CRLs
it holds; `RevocationView` keeps the latest for the membership check of each new SA
(`check_peer(..., revoked=view.problem)`), and `recheck` runs the check again on the
certificates behind every verified SA, refusing (terminating) those that no longer pass. With
no CRL (never fetched, distribution point unreachable) nothing is refused for that reason.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..identity.cert_reader import Certificate, CertificateError, as_certificate
from ..revocation.crl import crl_urls
from ..revocation.keeper import RevokedSet, revocation_problem
from .driver import DriverError
from .peer_check import check_peer

if TYPE_CHECKING:
    from .part import ChannelPart

LOG = logging.getLogger("acpd.channels")
MAX_URLS_SEEN = 64


class RevocationView:
    """The revoked certificates the node knows of (the latest RevocationUpdated)."""

    def __init__(self) -> None:
        self.revoked: RevokedSet = frozenset()
        self.updates = 0
        self.closed = 0   # SAs terminated because their peer's certificate was revoked
        self.urls_seen: set[str] = set()

    def update(self, revoked: RevokedSet) -> None:
        self.revoked = revoked
        self.updates += 1

    def problem(self, cert: Certificate) -> str | None:
        return revocation_problem(cert, self.revoked) if self.revoked else None

    def learn(self, leaves: Sequence[bytes]) -> tuple[str, ...]:
        """The CRL distribution points in a verified peer's certificates not seen before (the
        revocation part fetches them: another registrar's revocations)."""
        new: list[str] = []
        for der in leaves:
            try:
                urls = crl_urls(as_certificate(der))
            except (CertificateError, ValueError):
                continue
            for url in urls:
                if url not in self.urls_seen and len(self.urls_seen) < MAX_URLS_SEEN:
                    self.urls_seen.add(url)
                    new.append(url)
        return tuple(new)


async def recheck(part: ChannelPart) -> None:
    """Check every verified SA's peer again; terminate the SAs of revoked peers."""
    view = part.revocation
    if not view.revoked:
        return
    for ch in list(part.table):
        async with ch.lock:
            for sa_id, sa in list(ch.fsm.sas.items()):
                if not sa.verified or sa.rejected:
                    continue
                try:
                    leaves, others = await part._vici("peer_certificates", sa.remote_id)
                except DriverError as exc:
                    LOG.debug("revocation recheck of %s: %s", sa.remote_id, exc)
                    continue
                verdict = check_peer(sa.remote_id, leaves, others, part._anchors, part._domain,
                                     revoked=view.problem)
                if verdict.ok:
                    continue
                LOG.warning("channel %s %s: closing, peer %s refused: %s", ch.dull_ifname,
                            ch.peer, sa.remote_id, verdict.reason)
                view.closed += 1
                for action in ch.fsm.peer_rejected(sa_id, verdict.reason, part.now()):
                    await part._do(ch, action)
    part.rearm()

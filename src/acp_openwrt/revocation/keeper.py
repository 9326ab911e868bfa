"""The node's CRL keeper, a protocol core (docs/core-contract.md): which CRL distribution points
to fetch when, and the last good CRL of each issuer. No I/O, no clock.

RFC 8994 §6.2.3 rule 3: a peer whose certificate is revoked gets no channel, *when* the CRL is
reachable; when it is not, the channel is not refused for that reason (the last good CRL, if
any, still counts), the fetch is retried with the §6.7 back-off (10 s doubling, here up to the
refresh interval), and once a revocation is learned every channel to that peer is closed.

Inputs: `add_urls` (the CRLDPs of our own LDevID, at start), `refresh_all` (a channel came up:
fetch now, at most once per `min_gap`), `fetched` / `failed` (a fetch's outcome), each with
`now` (monotonic seconds) and, where a CRL is judged, `wall` (UTC). Output of `handle_timer`:
`Fetch(url)` actions. `revoked()` is the set of (issuer name DER, serial) of every revoked
certificate in the CRLs held. One CRL is held per (issuer, distribution point): registrars
sharing one CA each serve their own revocations, and the node keeps the union (a revocation is
never undone). Distribution points come from our own LDevID and, through `add_urls`, from the
certificates of verified peers (at most `max_sources`).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..identity.cert_reader import Certificate, as_certificate
from ..identity.membership import signature_problem
from .crl import Crl, CrlError, as_crl, crl_issuer, crl_number, load_crl, next_update, this_update

DEFAULT_REFRESH = 300.0
FIRST_RETRY = 10.0
MIN_GAP = 5.0
MAX_SOURCES = 16
MAX_ISSUERS = 16  # CAs learned from peers (other registrars' sub-CAs)
FUTURE_SKEW = dt.timedelta(minutes=10)

RevokedSet = frozenset[tuple[bytes, int]]


@dataclass(frozen=True)
class Fetch:
    url: str


@dataclass
class Source:
    url: str
    next_fetch: float | None
    in_flight: bool = False
    failures: int = 0
    last_fetch: dt.datetime | None = None     # wall time of the last good fetch
    last_attempt: dt.datetime | None = None
    last_error: str | None = None
    last_started: float | None = None


@dataclass
class Held:
    crl: Crl
    url: str | None                  # None: loaded from the file at start
    revoked: set[int] = field(default_factory=set)


class CrlKeeper:
    def __init__(self, anchors: Sequence[Any], *,
                 refresh: float = DEFAULT_REFRESH, first_retry: float = FIRST_RETRY,
                 min_gap: float = MIN_GAP, max_sources: int = MAX_SOURCES) -> None:
        self.anchors = [as_certificate(a) for a in anchors]
        self.issuers: list[Certificate] = []  # learned from verified peers (add_issuers)
        self.refresh, self.first_retry, self.min_gap = refresh, first_retry, min_gap
        self.max_sources = max_sources
        self.sources: dict[str, Source] = {}
        # (issuer name DER, distribution point or None) -> the newest good CRL from there
        self.held: dict[tuple[bytes, str | None], Held] = {}
        self.fetches = self.refused = 0

    # --- inputs ---
    def load(self, crls: Iterable[tuple[str | None, Any]],
             wall: dt.datetime) -> list[str]:
        """The CRLs kept across restarts (the file: distribution point, CRL); returns why any
        was not taken."""
        problems = []
        for url, crl in crls:
            problem = self._take(crl, url, wall)
            if problem:
                problems.append(problem)
        return problems

    def add_issuers(self, cas: Iterable[Any]) -> list[Certificate]:
        """CA certificates a verified peer's certificate chained through to our anchors
        (another registrar's sub-CA): CRLs they sign are taken too. Returns the new ones."""
        added = []
        for ca in (as_certificate(c) for c in cas):
            if ca not in self.anchors and ca not in self.issuers and \
                    len(self.issuers) < MAX_ISSUERS:
                self.issuers.append(ca)
                added.append(ca)
        return added

    def restore_issuers(self, cas: Iterable[Any]) -> list[Certificate]:
        """The CAs of add_issuers as kept across a restart (the issuers file): each taken
        again only if one of our anchors signed it, as a verified peer's chain showed before
        (another registrar's sub-CA under our root); returns those taken."""
        ok = []
        for ca in (as_certificate(c) for c in cas):
            if any(anchor.subject == ca.issuer and signature_problem(ca, anchor) is None
                   for anchor in self.anchors):
                ok.append(ca)
        return self.add_issuers(ok)

    def add_urls(self, urls: Iterable[str], now: float) -> list[str]:
        """Distribution points to fetch from now on (fetched at once); returns the new ones."""
        added = []
        for url in urls:
            if url not in self.sources and len(self.sources) < self.max_sources:
                self.sources[url] = Source(url, now)
                added.append(url)
        return added

    def refresh_all(self, now: float) -> None:
        """Fetch every source now (a channel came up), unless one was fetched just now."""
        for source in self.sources.values():
            if source.in_flight or (source.last_started is not None
                                    and now - source.last_started < self.min_gap):
                continue
            source.next_fetch = now

    def next_timer(self) -> float | None:
        due = [s.next_fetch for s in self.sources.values()
               if not s.in_flight and s.next_fetch is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[Fetch]:
        out = []
        for source in self.sources.values():
            if not source.in_flight and source.next_fetch is not None \
                    and source.next_fetch <= now:
                source.in_flight, source.next_fetch, source.last_started = True, None, now
                out.append(Fetch(source.url))
        return out

    def fetched(self, url: str, data: bytes, now: float, wall: dt.datetime) -> bool:
        """A fetch answered `data`; True when the set of revoked certificates changed."""
        source = self.sources.get(url)
        if source is None:
            return False
        source.in_flight, source.last_attempt = False, wall
        before = self.revoked()
        try:
            crl = load_crl(data)
        except CrlError as exc:
            self._failed(source, str(exc), now)
            return False
        problem = self._take(crl, url, wall)
        if problem:
            self.refused += 1
            self._failed(source, problem, now)
            return False
        self.fetches += 1
        source.failures, source.last_error, source.last_fetch = 0, None, wall
        source.next_fetch = now + self.refresh
        return self.revoked() != before

    def failed(self, url: str, reason: str, now: float, wall: dt.datetime) -> None:
        """The CRLDP could not be reached (or answered no CRL): keep what we hold, retry."""
        source = self.sources.get(url)
        if source is not None:
            source.in_flight, source.last_attempt = False, wall
            self._failed(source, reason, now)

    def _failed(self, source: Source, reason: str, now: float) -> None:
        source.failures += 1
        source.last_error = reason
        delay = min(self.first_retry * 2 ** (source.failures - 1), self.refresh)
        source.next_fetch = now + delay

    def _take(self, value: Any, url: str | None, wall: dt.datetime) -> str | None:
        """Keep the CRL if it is our CA's and newer than the one held; why not, else None."""
        crl = as_crl(value)
        try:
            crl_issuer(crl, [*self.anchors, *self.issuers])
        except CrlError as exc:
            return str(exc)
        if this_update(crl) > wall + FUTURE_SKEW:
            return f"CRL issued in the future ({this_update(crl):%Y-%m-%d %H:%M} UTC)"
        key = (crl.issuer.public_bytes(), url)
        held = self.held.get(key)
        if held is not None and (crl_number(crl), this_update(crl)) < \
                (crl_number(held.crl), this_update(held.crl)):
            return (f"CRL number {crl_number(crl)} is older than the one held "
                    f"({crl_number(held.crl)})")
        self.held[key] = Held(crl, url, set(crl.revoked))
        return None

    # --- queries ---
    def revoked(self) -> RevokedSet:
        return frozenset((issuer, serial) for (issuer, _), held in self.held.items()
                         for serial in held.revoked)

    def crls(self) -> list[tuple[str | None, Crl]]:
        """What the file keeps: each CRL with the distribution point it came from."""
        return [(held.url, held.crl) for held in self.held.values()]

    def status(self, now: float, wall: dt.datetime) -> dict[str, Any]:
        crls = []
        for held in self.held.values():
            upcoming = next_update(held.crl)
            crls.append({"issuer": held.crl.issuer.rfc4514_string(),
                         "crl_number": crl_number(held.crl),
                         "this_update": round(this_update(held.crl).timestamp(), 1),
                         "next_update": None if upcoming is None
                         else round(upcoming.timestamp(), 1),
                         "stale": upcoming is not None and wall > upcoming,
                         "revoked": len(held.revoked), "url": held.url})
        sources = [{"url": s.url, "in_flight": s.in_flight, "failures": s.failures,
                    "last_fetch": None if s.last_fetch is None
                    else round(s.last_fetch.timestamp(), 1),
                    "last_attempt": None if s.last_attempt is None
                    else round(s.last_attempt.timestamp(), 1),
                    "next_fetch_in_s": None if s.next_fetch is None
                    else round(max(0.0, s.next_fetch - now), 1),
                    "last_error": s.last_error} for s in self.sources.values()]
        return {"refresh_s": self.refresh, "revoked": len(self.revoked()), "crls": crls,
                "sources": sources, "fetches": self.fetches, "refused": self.refused}


def revocation_problem(cert: Certificate, revoked: RevokedSet) -> str | None:
    """Why `cert` must not be accepted (RFC 8994 §6.2.3 rule 3), or None."""
    if (cert.issuer.public_bytes(), cert.serial_number) in revoked:
        return f"certificate {cert.serial_number:x} is revoked (CRL)"
    return None

"""Which join proxy the pledge tries next (RFC 8995 §4.1): per-proxy back-off, no I/O.

Every proxy heard (AN_Proxy flood) is tried; each keeps its own exponential back-off, so one
broken proxy never delays another (§4.1: independent timers, max 1 h). A proxy not heard for
`ttl` seconds is forgotten. One attempt runs at a time.

`ProxyBook` is the pledge's protocol core (docs/core-contract.md): every input takes `now`
(monotonic seconds), `next_timer()` is when the next proxy is due (None while an attempt runs
or none is known) and `handle_timer(now)` returns `[TryProxy(locator)]` for it. The pledge part
runs it on one `core.CoreTimer` and reports each attempt's end with `failed()` or `done()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .locator import Locator

INITIAL_BACKOFF = 2.0
MAX_BACKOFF = 3600.0
PROXY_TTL = 180.0  # the AN_Proxy flood ttl (§4.1.1)


@dataclass
class ProxyEntry:
    locator: Locator
    heard: float
    next_try: float
    backoff: float
    failures: int = 0
    last_reason: str | None = None


@dataclass(frozen=True)
class TryProxy:
    """Output: enrol through this join proxy now (then report failed() or done())."""
    locator: Locator


class ProxyBook:
    def __init__(self, *, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF, ttl: float = PROXY_TTL) -> None:
        self.initial_backoff, self.max_backoff, self.ttl = initial_backoff, max_backoff, ttl
        self.entries: dict[Locator, ProxyEntry] = {}
        self.trying: Locator | None = None  # the attempt under way

    # -- the core contract ----------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When the next proxy is due, or one is forgotten; None while an attempt runs."""
        if self.trying is not None or not self.entries:
            return None
        return min(min(e.next_try, e.heard + self.ttl) for e in self.entries.values())

    def handle_timer(self, now: float) -> list[TryProxy]:
        """Forget stale proxies; start an attempt through the one due, if any."""
        if self.trying is not None:
            return []
        locator, _wait = self.next_due(now)
        if locator is None:
            return []
        self.trying = locator
        return [TryProxy(locator)]

    def done(self, locator: Locator) -> None:
        """The attempt through `locator` enrolled the node."""
        if self.trying == locator:
            self.trying = None

    def heard(self, locator: Locator, now: float) -> bool:
        """A flood named this proxy; True when it is new (then it is due at once)."""
        entry = self.entries.get(locator)
        if entry is not None:
            entry.heard = now
            return False
        self.entries[locator] = ProxyEntry(locator, now, now, self.initial_backoff)
        return True

    def expire(self, now: float) -> list[Locator]:
        gone = [loc for loc, e in self.entries.items() if now - e.heard > self.ttl]
        for locator in gone:
            del self.entries[locator]
        return gone

    def next_due(self, now: float) -> tuple[Locator | None, float | None]:
        """(the proxy to try now, None) or (None, seconds until one is due / None if none)."""
        self.expire(now)
        if not self.entries:
            return None, None
        entry = min(self.entries.values(), key=lambda e: (e.next_try, e.failures))
        if entry.next_try <= now:
            return entry.locator, None
        return None, entry.next_try - now

    def failed(self, locator: Locator, now: float, reason: str) -> None:
        """The attempt through `locator` failed: it backs off (doubling, up to max_backoff)."""
        if self.trying == locator:
            self.trying = None
        entry = self.entries.get(locator)
        if entry is None:
            return
        entry.failures += 1
        entry.last_reason = reason
        entry.next_try = now + entry.backoff
        entry.backoff = min(entry.backoff * 2, self.max_backoff)

    def retry_all_now(self, now: float) -> int:
        """The operator asked to enrol now: every known proxy is due at once, back-off reset."""
        for entry in self.entries.values():
            entry.next_try, entry.backoff = now, self.initial_backoff
        return len(self.entries)

    def status(self, now: float) -> list[dict[str, Any]]:
        return [{"address": e.locator.address, "port": e.locator.port,
                 "ifname": e.locator.ifname, "failures": e.failures,
                 "next_try_in": round(max(0.0, e.next_try - now), 1),
                 "last_refusal": e.last_reason} for e in self.entries.values()]

"""The adjacency table (RFC 8994 §6.3/§6.4), sans-I/O: heard AN_ACP floods in, events out.

An entry is one neighbour (its link-local address) on one DULL interface. It lives for the
flood's ttl after it was last heard, within ``Limits`` (GRASP's ttl 0, "forever", is the
default lifetime here: a neighbour must not outlive its floods); a neighbour that changes its
methods is announced again.

Anybody on a link who can spoof source addresses can invent neighbours as fast as they can
send, so the table is bounded per interface and trusts some entries more than others:

* confirmed: a secure channel to it came up (``confirm``: the peer proved ACP domain
  membership), or it was heard ``confirm_floods`` times over at least ``confirm_span_s`` (its
  next periodic flood). At most ``max_reheard`` entries per interface are confirmed the second
  way, so a stranger who keeps a few fakes alive cannot fill a link with them. Or it answered
  an echo to all nodes on the link (``BY_ANSWER``, liveness.py: the address exists), at most
  ``max_answered`` per interface.
* unconfirmed: everything else, kept per interface in least-recently-heard order.

A newcomer on an interface holding ``per_interface`` entries (or on a node holding ``total``)
evicts the unconfirmed entry heard least recently (on the interface with the most unconfirmed
entries when the node is full). So a newcomer is admitted whenever anything unconfirmed can
make room, one link's flood never touches another link's entries, and a confirmed entry is
never evicted, only expired. Every refusal and eviction is counted.

A protocol core (docs/core-contract.md): every input takes ``now`` (monotonic seconds), the
table never reads a clock; ``next_timer()``/``handle_timer(now)`` are its expiry, which the
discovery part runs on one loop timer (core.CoreTimer).
"""
from __future__ import annotations

import heapq
import itertools
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from ..events import AdjacencyDown, AdjacencyUp

BY_CHANNEL = "channel"
BY_REHEARD = "reheard"
BY_ANSWER = "answer"
Key = tuple[str, str]  # (peer, ifname)


@dataclass(frozen=True)
class Limits:
    """Bounds of the table; the defaults fit the RFC 8994 §6.4 flood period of 60 s."""
    per_interface: int = 256     # entries on one DULL interface
    total: int = 4096            # entries on the node
    max_reheard: int = 32        # per interface: entries confirmed only by being heard again
    max_answered: int = 32       # per interface: entries confirmed only by answering an echo
    confirm_floods: int = 3      # heard this often ...
    confirm_span_s: float = 48.0  # ... over at least this long (0.8 flood periods)
    default_ttl_s: float = 210.0  # for ttl 0; RFC 8994 §6.4: 3.5 periods (two lost floods)
    max_ttl_s: float = 210.0
    min_ttl_s: float = 1.0

    @classmethod
    def for_interval(cls, interval_s: float, **overrides: Any) -> Limits:
        """Limits for a flood period: a neighbour lives at most 3.5 periods unheard, as long
        as our own floods' ttl, and is confirmed by floods spanning 0.8 periods (its next
        periodic flood comes 0.9 to 1.1 periods later: jitter)."""
        ttl = 3.5 * interval_s
        values: dict[str, Any] = {"confirm_span_s": 0.8 * interval_s, "default_ttl_s": ttl,
                                  "max_ttl_s": ttl, "min_ttl_s": min(1.0, ttl)}
        values.update(overrides)
        return cls(**values)


@dataclass(slots=True, eq=False)
class Adjacency:
    peer: str
    ifname: str
    methods: tuple[str, ...]
    port: int
    expires: float
    first_seen: float
    last_seen: float
    heard: int = 1
    confirmed: str | None = None  # BY_CHANNEL, BY_REHEARD, BY_ANSWER or None

    def to_dict(self, now: float, wall_offset: float) -> dict[str, Any]:
        return {"peer": self.peer, "interface": self.ifname, "methods": list(self.methods),
                "port": self.port, "ttl_s": round(max(0.0, self.expires - now), 1),
                "first_seen": round(self.first_seen + wall_offset, 3),
                "last_seen": round(self.last_seen + wall_offset, 3), "floods_heard": self.heard,
                "confirmed": self.confirmed}


@dataclass(frozen=True)
class Confirmed:
    """Not a bus event: tells the discovery service that an entry is now trusted (``how``)."""
    peer: str
    ifname: str
    how: str


TableEvent = AdjacencyUp | AdjacencyDown | Confirmed
COUNTERS = ("evicted", "interface_full_drops", "table_full_drops", "ttl_capped",
            "reheard_refused", "answered_refused")


class AdjacencyTable:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.entries: dict[Key, Adjacency] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # per interface: its unconfirmed entries, least recently heard first
        self._unconfirmed: dict[str, OrderedDict[Key, Adjacency]] = {}
        self._per_interface: Counter[str] = Counter()
        self._reheard: Counter[str] = Counter()   # BY_REHEARD entries per interface
        self._answered: Counter[str] = Counter()  # BY_ANSWER entries per interface
        # (expires, seq, entry); an entry heard again is re-filed when its old item comes due
        self._expiry: list[tuple[float, int, Adjacency]] = []
        self._seq = itertools.count()

    def ttl_s(self, ttl_ms: int) -> float:
        """A flood's ttl as this table keeps it: 0 is the default lifetime, the rest clamped."""
        lim = self.limits
        if ttl_ms <= 0:
            self.counters["ttl_capped"] += 1
            return lim.default_ttl_s
        ttl = ttl_ms / 1000.0
        if ttl > lim.max_ttl_s:
            self.counters["ttl_capped"] += 1
            return lim.max_ttl_s
        return max(ttl, lim.min_ttl_s)

    def heard(self, peer: str, ifname: str, methods: tuple[str, ...], port: int, ttl_ms: int,
              now: float) -> list[TableEvent]:
        """A flood arrived: add (making room if need be) or refresh. AdjacencyUp when new or
        its methods changed, AdjacencyDown for an entry evicted to make room, Confirmed when
        it has now been heard often enough."""
        ttl = self.ttl_s(ttl_ms)
        key = (peer, ifname)
        entry = self.entries.get(key)
        if entry is None:
            out = self._make_room(ifname)
            if out is None:
                return []
            entry = Adjacency(peer, ifname, methods, port, now + ttl, now, now)
            self.entries[key] = entry
            self._per_interface[ifname] += 1
            self._unconfirmed.setdefault(ifname, OrderedDict())[key] = entry
            self._push(entry)
            out.append(AdjacencyUp(peer, ifname, methods, port))
            return out
        out = []
        expires = now + ttl
        sooner = expires < entry.expires  # a shorter ttl than before: its heap item is too late
        entry.expires = expires
        if sooner:
            self._push(entry)
        entry.last_seen = now
        entry.heard += 1
        if entry.confirmed is None:
            self._unconfirmed[ifname].move_to_end(key)
            lim = self.limits
            if entry.heard >= lim.confirm_floods and now - entry.first_seen >= lim.confirm_span_s:
                if self._reheard[ifname] < lim.max_reheard:
                    out.append(self._confirm(entry, BY_REHEARD))
                else:
                    self.counters["reheard_refused"] += 1
        if (entry.methods, entry.port) != (methods, port):
            entry.methods, entry.port = methods, port
            out.append(AdjacencyUp(peer, ifname, methods, port))
        return out

    def confirm(self, peer: str, ifname: str, how: str = BY_CHANNEL) -> Confirmed | None:
        """Trust an entry (a channel to it came up, or it answered an echo); None if there is
        no such entry, it was already trusted as much, or (BY_ANSWER) the link's quota of
        such entries is full (counted)."""
        entry = self.entries.get((peer, ifname))
        if entry is None or entry.confirmed == how or entry.confirmed == BY_CHANNEL:
            return None
        if how == BY_ANSWER:
            if entry.confirmed is not None:
                return None  # reheard already: as trusted, and no quota spent twice
            if self._answered[ifname] >= self.limits.max_answered:
                self.counters["answered_refused"] += 1
                return None
        return self._confirm(entry, how)

    def _confirm(self, entry: Adjacency, how: str) -> Confirmed:
        quota = {BY_REHEARD: self._reheard, BY_ANSWER: self._answered}
        if entry.confirmed is None:
            del self._unconfirmed[entry.ifname][(entry.peer, entry.ifname)]
        elif entry.confirmed in quota:
            quota[entry.confirmed][entry.ifname] -= 1
        if how in quota:
            quota[how][entry.ifname] += 1
        entry.confirmed = how
        return Confirmed(entry.peer, entry.ifname, how)

    def _make_room(self, ifname: str) -> list[TableEvent] | None:
        """Evictions that make room for a newcomer on ``ifname``; None (counted) if none can."""
        out: list[TableEvent] = []
        if self._per_interface[ifname] >= self.limits.per_interface:
            victims = self._unconfirmed.get(ifname)
            if not victims:
                self.counters["interface_full_drops"] += 1
                return None
            out.append(self._evict(next(iter(victims))))
        if len(self.entries) >= self.limits.total:
            busiest = max(self._unconfirmed.values(), key=len, default=None)
            if not busiest:
                self.counters["table_full_drops"] += 1
                return None
            out.append(self._evict(next(iter(busiest))))
        return out

    def _evict(self, key: Key) -> AdjacencyDown:
        self.counters["evicted"] += 1
        return self._remove(key)

    def _push(self, entry: Adjacency) -> None:
        heapq.heappush(self._expiry, (entry.expires, next(self._seq), entry))
        if len(self._expiry) > 2 * len(self.entries) + 64:  # evicted entries' items pile up
            self._expiry = [(e.expires, next(self._seq), e) for e in self.entries.values()]
            heapq.heapify(self._expiry)

    def expire(self, now: float) -> list[AdjacencyDown]:
        out = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, entry = heapq.heappop(heap)
            key = (entry.peer, entry.ifname)
            if self.entries.get(key) is not entry:
                continue  # removed meanwhile
            if entry.expires > now:
                heapq.heappush(heap, (entry.expires, next(self._seq), entry))  # refreshed
            else:
                out.append(self._remove(key))
        return out

    def next_expiry(self) -> float | None:
        """When expire() next has work (possibly earlier: a refreshed entry is re-filed then)."""
        heap = self._expiry
        while heap and self.entries.get((heap[0][2].peer, heap[0][2].ifname)) is not heap[0][2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # the core contract: the table's only timer is expiry
    def next_timer(self) -> float | None:
        return self.next_expiry()

    def handle_timer(self, now: float) -> list[AdjacencyDown]:
        return self.expire(now)

    def drop_interface(self, ifname: str) -> list[AdjacencyDown]:
        return [self._remove(key) for key in list(self.entries) if key[1] == ifname]

    def clear(self) -> list[AdjacencyDown]:
        return [self._remove(key) for key in list(self.entries)]

    def _remove(self, key: Key) -> AdjacencyDown:
        entry = self.entries.pop(key)
        ifname = entry.ifname
        self._per_interface[ifname] -= 1
        if not self._per_interface[ifname]:
            del self._per_interface[ifname]
            self._unconfirmed.pop(ifname, None)
        if entry.confirmed is None:
            victims = self._unconfirmed.get(ifname)
            if victims is not None:
                victims.pop(key, None)
        elif entry.confirmed == BY_REHEARD:
            self._reheard[ifname] -= 1
        elif entry.confirmed == BY_ANSWER:
            self._answered[ifname] -= 1
        return AdjacencyDown(entry.peer, ifname)

    def confirmed_count(self) -> dict[str, int]:
        counts = Counter(e.confirmed for e in self.entries.values() if e.confirmed)
        return {BY_CHANNEL: counts[BY_CHANNEL], BY_REHEARD: counts[BY_REHEARD],
                BY_ANSWER: counts[BY_ANSWER]}

    def to_list(self, now: float, wall_offset: float = 0.0) -> list[dict[str, Any]]:
        """Entries for `acpctl neighbors`; ``wall_offset`` turns monotonic times into epoch."""
        return [e.to_dict(now, wall_offset) for e in sorted(self.entries.values(),
                                                            key=lambda e: (e.ifname, e.peer))]

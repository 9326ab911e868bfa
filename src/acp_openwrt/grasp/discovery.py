"""Discovery (RFC 8990 §2.5.4): answering, relaying, the locator cache, and our own discover().

Part of the engine (it reaches back for sending and counting); split out because discovery is
one job with its own state: registered objectives, the cache of discovered locators with their
lifetimes, relayed discoveries waiting for responses, and our own pending discoveries.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, NamedTuple

from . import constants as c
from .actions import Discovered
from .errors import GraspApiError, GraspError
from .messages import Discovery, Locator, Objective, Response, is_link_local
from .seen_cache import SeenCache

if TYPE_CHECKING:
    from .engine import Engine, _Stream

_DEFAULT_RESPONSE_TTL_MS = 10 * c.GRASP_DEF_TIMEOUT  # §2.8.5: ttl 0 means "much longer"


class _CachedLocator(NamedTuple):
    expires: float
    ifname: str | None
    diverted: bool


class _Relay(NamedTuple):
    """Where responses to a relayed discovery go back to: a stream, or (ifname, addr, port)."""
    conn_id: int | None
    ifname: str | None
    address: bytes
    port: int
    name: str


class _Pending:
    __slots__ = ("handle", "name", "deadline", "found", "first")

    def __init__(self, handle: int, name: str, deadline: float, first: bool = False) -> None:
        self.handle = handle
        self.name = name
        self.deadline = deadline
        self.found: dict[Locator, None] = {}
        self.first = first  # done at the first response that brings a locator


class DiscoveryRole:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.registered: dict[str, tuple[Objective, tuple[Locator, ...], int]] = {}
        self.cache: dict[str, dict[Locator, _CachedLocator]] = {}
        self._cached = 0  # locators in the cache, all names
        cfg = engine.config
        self._relays = SeenCache(cfg.seen_lifetime, cfg.max_seen)
        self._pending: dict[int, _Pending] = {}

    # -- registration and the cache -----------------------------------------------------------
    def register(self, objective: Objective, locators: tuple[Locator, ...], ttl_ms: int) -> None:
        if self.e.config.dull:
            raise GraspApiError(GraspError.noSecurity, "no discovery responses in DULL")
        if not locators:
            locators = (Locator(c.O_IPv6_LOCATOR, self.e.config.address, c.IPPROTO_TCP,
                                self.e.config.port),)
        self.registered[objective.name] = (objective, locators, ttl_ms)

    def cached(self, name: str, now: float) -> list[Locator]:
        return [loc for loc, entry in self.cache.get(name, {}).items() if entry.expires > now]

    def _remember(self, name: str, resp: Response, ifname: str | None, now: float) -> None:
        ttl_ms = resp.ttl or _DEFAULT_RESPONSE_TTL_MS
        entries = self.cache.setdefault(name, {})
        for loc in resp.locators:
            if loc not in entries:
                self._cached += 1
            entries[loc] = _CachedLocator(now + ttl_ms / 1000.0, ifname, resp.diverted)
        if self._cached > self.e.config.max_discovered:
            self._make_room()

    def _make_room(self) -> None:
        """Bounded like the flood cache: the locators closest to expiry go, 1/16 of the cap
        beyond it at once (a response may carry a thousand locators, each its own entry)."""
        cap = self.e.config.max_discovered
        excess = self._cached - (cap - max(1, cap // 16))
        every = ((entry.expires, name, loc) for name, entries in self.cache.items()
                 for loc, entry in entries.items())
        for _, name, loc in heapq.nsmallest(excess, every, key=lambda t: t[0]):
            entries = self.cache[name]
            del entries[loc]
            if not entries:
                del self.cache[name]
        self._cached -= excess

    # -- receiving ----------------------------------------------------------------------------
    def on_discovery(self, msg: Discovery, ifname: str | None, src: bytes, src_port: int | None,
                     conn_id: int | None, now: float) -> None:
        e = self.e
        if msg.initiator == e.config.address and msg.session_id in self._pending:
            return e.drop("own_discovery")
        key = (msg.session_id, msg.initiator)
        if key in self._relays and self._relays.get(key, now) is not None:
            return e.drop("duplicate_discovery")
        name = msg.objective.name
        own = self.registered.get(name)
        reply: Response | None
        if own is not None:
            reply = Response(msg.session_id, msg.initiator, own[2], own[1])
        else:
            # answer from the cache with a divert, but not with what this interface taught us
            # (§2.9.2: a divert never carries a link-local locator)
            found = tuple(loc for loc, entry in self.cache.get(name, {}).items()
                          if entry.expires > now and entry.ifname != ifname
                          and not (loc.kind == c.O_IPv6_LOCATOR and isinstance(loc.address, bytes)
                                   and is_link_local(loc.address)))
            remaining = min((entry.expires for loc, entry in self.cache.get(name, {}).items()
                             if loc in found), default=now)
            ttl = max(1, int((remaining - now) * 1000))
            reply = Response(msg.session_id, msg.initiator, ttl, found, True) if found else None
        if reply is not None:
            e.count("discovery_answered")
            return self._reply(reply, ifname, src, src_port, conn_id)
        loop = msg.objective.loop_count - 1
        if loop < 1 or len(e.interfaces) < 2:
            return e.drop("discovery_unanswered", name)
        if not e.relay_budget.take(None, now):
            return e.drop("relay_rate_limited")
        lifetime = e.config.relay_timeout_per_hop * loop
        relay = _Relay(conn_id, ifname, src, src_port or c.GRASP_LISTEN_PORT, name)
        self._relays.add(key, now, relay,
                         lifetime=max(lifetime, e.config.relay_timeout_per_hop))
        e.count("discovery_relayed")
        e.multicast(msg._replace(objective=msg.objective.with_loop_count(loop)),
                    except_ifname=ifname)

    def _reply(self, reply: Response, ifname: str | None, address: bytes, port: int | None,
               conn_id: int | None) -> None:
        e = self.e
        if conn_id is None:  # §2.5.4.4: back over TCP to the port the multicast came from
            conn_id = e.open_stream(ifname, address, port or c.GRASP_LISTEN_PORT)
        e.send_stream(conn_id, reply)
        e.close_stream(conn_id)

    def on_response(self, msg: Response, conn_id: int, stream: _Stream, now: float) -> None:
        e = self.e
        e.close_stream(conn_id)  # one response per connection (§2.8.5)
        pending = self._pending.get(msg.session_id) if msg.initiator == e.config.address else None
        if pending is not None:
            self._remember(pending.name, msg, stream.ifname, now)
            room = self.e.config.max_discovered - len(pending.found)
            for loc in msg.locators[:max(room, 0)]:
                pending.found[loc] = None
            e.count("discovery_response")
            if pending.first and pending.found:   # the caller wants the first answer, now
                del self._pending[msg.session_id]
                e.emit(Discovered(pending.handle, pending.name, tuple(pending.found)))
            return None
        relay: Any = self._relays.get((msg.session_id, msg.initiator), now)
        if relay is None:
            return e.drop("unexpected_response")
        self._remember(relay.name, msg, stream.ifname, now)
        e.count("discovery_response_relayed")
        self._reply(msg, relay.ifname, relay.address, relay.port, relay.conn_id)

    # -- our own discoveries ------------------------------------------------------------------
    def discover(self, objective: Objective, now: float, timeout_ms: int | None,
                 first: bool = False) -> int:
        """Start a discovery; a Discovered event follows at the deadline (at once for
        timeout 0, which answers from the cache only, as RFC 8991 says), or with `first` at
        the first response that brings a locator (the deadline if none does)."""
        e = self.e
        if e.config.dull:
            raise GraspApiError(GraspError.noSecurity, "DULL instances only flood")
        handle = e.new_id()
        if timeout_ms == 0:
            e.emit(Discovered(handle, objective.name, tuple(self.cached(objective.name, now))))
            return handle
        if timeout_ms is None:
            timeout_ms = 100 * max(objective.loop_count, 1)  # §2.5.4.3 suggestion
        sid = e.session_ids.new(now, self._pending)
        self._pending[sid] = _Pending(handle, objective.name, now + timeout_ms / 1000.0, first)
        e.multicast(Discovery(sid, e.config.address, objective))
        return handle

    def handle_timer(self, now: float) -> None:
        for sid in [s for s, p in self._pending.items() if p.deadline <= now]:
            p = self._pending.pop(sid)
            self.e.emit(Discovered(p.handle, p.name, tuple(p.found)))
        self._relays.expire(now)
        for name in list(self.cache):
            live = {loc: entry for loc, entry in self.cache[name].items() if entry.expires > now}
            if live:
                self.cache[name] = live
            else:
                del self.cache[name]
        self._cached = sum(len(entries) for entries in self.cache.values())

    def next_timer(self) -> float | None:
        times = [p.deadline for p in self._pending.values()]
        times.extend(entry.expires for entries in self.cache.values() for entry in entries.values())
        return min(times, default=None)

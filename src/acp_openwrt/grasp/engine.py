"""The GRASP engine (RFC 8990), sans-I/O: events in, actions out, time passed in.

Like h11 or aioquic, the engine never touches a socket or a clock. The asyncio edge (one per
GRASP instance: a DULL instance per link, or the ACP instance) feeds it:

  add_interface(ifname, link_local) / remove_interface(ifname)
  receive_datagram(ifname, src, data, now, src_port) -> outputs   a UDP datagram to ff02::13:7017
  stream_accepted(peer, ifname, now) -> (conn_id, outputs)         an incoming TCP connection
  receive_stream_data(conn_id, data, now) -> outputs      bytes as read from a TCP connection
  receive_stream_message(conn_id, data, now) -> outputs   one framed message (StreamFramer)
  stream_closed(conn_id, now) -> outputs                  the peer closed, or the connect failed
  handle_timer(now) -> outputs                            at (or after) next_timer()

and ASA-facing calls (the RFC 8991 API layer sits on these): flood, discover,
request_negotiate and synchronize return ``(handle or session id, outputs)``; negotiate_step,
negotiate_wait and end_negotiate return the outputs; register_objective, listen_negotiate,
listen_synchronize, their stop/deregister calls and get_flood cause no output and return none.
Calls that are refused raise ``GraspApiError`` (an RFC 8991 code) whose ``outputs`` holds what
the call did before refusing (negotiate_step ends a session whose loop count is exhausted);
outcomes that arrive later come as events.

Every call returns what it caused, in order (docs/core-contract.md): what the edge must do
and every event for ASAs (see actions.py for the types). Internally the roles append to one
list that the public call hands back and replaces, so returning costs no more than queueing
did. ``now`` is a monotonic time in seconds; protocol fields (ttl, timeouts) stay in
milliseconds as on the wire.

Every message dropped is counted by reason in ``counters`` (what the status output shows) and
logged at debug level; nothing a peer sends can raise out of a receive call. Options that are
not consistent with a message's type are skipped and counted (``unknown_option_skipped``); the
rest of that message is processed (RFC 8990 §2.8.2).

DULL mode (RFC 8990 §2.5.2, RFC 8994 §6.4): only M_FLOOD and M_DISCOVERY are accepted, only
from link-local sources and only with loop count 1 in every objective; nothing is relayed and
there is no unicast. A neighbour's M_DISCOVERY is handed up as a ``DiscoveryHeard`` event (no
M_RESPONSE: that would be unicast), and ``solicit`` sends one (a pledge asking for AN_Proxy).
Our own floods go out per interface with that interface's link-local address as initiator,
loop count 1, and a locator address of ``::`` replaced by the same address.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from . import constants as c
from .actions import (
    CloseStream,
    DiscoveryHeard,
    FloodReceived,
    OpenStream,
    Output,
    SendMulticast,
    SendStream,
)
from .codec import GraspDecodeError, decode_counted, encode
from .discovery import DiscoveryRole
from .errors import GraspApiError, GraspError
from .flood_cache import FloodCache, FloodEntry
from .messages import (
    Discovery,
    Flood,
    Locator,
    Message,
    Noop,
    Objective,
    Response,
    TaggedObjective,
    is_link_local,
    message_name,
)
from .negotiation import SessionRole
from .rate_limit import TokenBuckets
from .seen_cache import SeenCache
from .session import SessionIds
from .stream import StreamFramer

_log = logging.getLogger(__name__)
_UNSPECIFIED = bytes(16)


@dataclass(slots=True)
class EngineConfig:
    """Knobs of one GRASP instance; the defaults follow RFC 8990 where it gives a value."""

    dull: bool = False
    address: bytes = _UNSPECIFIED  # our initiator address / own locator (the ACP address)
    port: int = c.GRASP_LISTEN_PORT  # where we listen for TCP (discovery responses, requests)
    udp_max_size: int = c.GRASP_DEF_MAX_SIZE
    tcp_max_size: int = c.DEFAULT_TCP_MAX_SIZE
    neighbour_rate: float = 500.0  # messages/s per (interface, source address)
    neighbour_burst: float = 1000.0
    garbage_cost: float = 20.0  # extra tokens a message that does not decode costs its sender
    relay_rate: float = 1000.0  # relayed floods + discoveries per second, all neighbours together
    relay_burst: float = 1000.0
    seen_lifetime: float = 2 * c.GRASP_DEF_TIMEOUT / 1000.0  # §2.5.6.2: >= 2 x GRASP_DEF_TIMEOUT
    max_seen: int = 16384
    max_flood_entries: int = 1024
    max_discovered: int = 1024  # locators cached from discovery responses, all objectives
    relay_timeout_per_hop: float = 0.1  # §2.5.4.4: 100 ms x remaining loop count
    session_timeout_ms: int = c.GRASP_DEF_TIMEOUT


class _Stream:
    __slots__ = ("peer", "ifname", "framer")

    def __init__(self, peer: bytes, ifname: str | None) -> None:
        self.peer = peer
        self.ifname = ifname
        self.framer: StreamFramer | None = None  # made when a read is not one whole message


class Engine:
    """One GRASP instance."""

    def __init__(self, config: EngineConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = cfg = config or EngineConfig()
        self.counters: dict[str, int] = {}
        self.flood_cache = FloodCache(cfg.max_flood_entries)
        self._out: list[Output] = []  # what the current call caused; empty between calls
        self._ifaces: dict[str, bytes] = {}
        self._rng = rng or random.SystemRandom()
        self.session_ids = SessionIds(self._rng)
        self._neighbours = TokenBuckets(cfg.neighbour_rate, cfg.neighbour_burst)
        self.relay_budget = TokenBuckets(cfg.relay_rate, cfg.relay_burst, max_keys=1)
        self._flood_seen = SeenCache(cfg.seen_lifetime, cfg.max_seen)
        self.streams: dict[int, _Stream] = {}
        self._next_id = 0
        self.discovery = DiscoveryRole(self)
        self.sessions = SessionRole(self)

    # -- plumbing shared by the roles ---------------------------------------------------------
    def emit(self, item: Output) -> None:
        self._out.append(item)

    def _take(self) -> list[Output]:
        """What the current call caused, in order; the next call starts a fresh list."""
        out = self._out
        self._out = []
        return out

    def drop(self, reason: str, detail: object = "") -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1
        _log.debug("grasp drop: %s %s", reason, detail)

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def _skipped(self, n: int) -> None:
        """Options the codec skipped (RFC 8990 §2.8.2); the rest of the message goes on."""
        self.counters["unknown_option_skipped"] = self.counters.get("unknown_option_skipped", 0) + n

    def new_id(self) -> int:
        """Connection ids and API handles: one counter, never reused."""
        self._next_id += 1
        return self._next_id

    @property
    def interfaces(self) -> dict[str, bytes]:
        return self._ifaces

    def multicast(self, msg: Message, except_ifname: str | None = None) -> None:
        data = encode(msg)
        for ifname in self._ifaces:
            if ifname != except_ifname:
                self._out.append(SendMulticast(ifname, data))

    def open_stream(self, ifname: str | None, address: bytes, port: int) -> int:
        conn_id = self.new_id()
        self.streams[conn_id] = _Stream(address, ifname)
        self._out.append(OpenStream(conn_id, ifname, address, port))
        return conn_id

    def send_stream(self, conn_id: int, msg: Message) -> None:
        self._out.append(SendStream(conn_id, encode(msg)))

    def close_stream(self, conn_id: int) -> None:
        if self.streams.pop(conn_id, None) is not None:
            self._out.append(CloseStream(conn_id))

    # -- interfaces ---------------------------------------------------------------------------
    def add_interface(self, ifname: str, link_local: bytes) -> None:
        self._ifaces[ifname] = link_local

    def remove_interface(self, ifname: str) -> None:
        self._ifaces.pop(ifname, None)

    # -- input: datagrams ---------------------------------------------------------------------
    def receive_datagram(self, ifname: str, src: bytes, data: bytes, now: float,
                         src_port: int = c.GRASP_LISTEN_PORT) -> list[Output]:
        """A link-local multicast (or unicast UDP) message arrived on ``ifname`` from ``src``."""
        if ifname not in self._ifaces:
            self.drop("unknown_interface", ifname)
            return []
        dull = self.config.dull
        if dull and not is_link_local(src):
            self.drop("dull_not_link_local", src.hex())
            return []
        key = (ifname, src)
        if not self._neighbours.take(key, now):
            self.drop("rate_limited", src.hex())
            return []
        try:
            msg, skipped = decode_counted(data, self.config.udp_max_size)
        except GraspDecodeError as exc:
            self._neighbours.penalise(key, self.config.garbage_cost)
            self.drop("decode_error", exc)
            return []
        if skipped:
            self._skipped(skipped)
        # isinstance rather than type(msg) is X: as cheap on CPython 3.11+, and it narrows
        if isinstance(msg, Flood):
            self._on_flood(msg, ifname, src, now)
        elif dull:
            if isinstance(msg, Discovery):
                self._on_dull_discovery(msg, ifname, src)
            else:
                self.drop("dull_not_flood", message_name(msg))
        elif isinstance(msg, Discovery):
            self.discovery.on_discovery(msg, ifname, src, src_port, None, now)
        elif isinstance(msg, Noop):
            self.count("noop")
        else:
            self.drop("not_multicast_type", message_name(msg))
        out = self._out
        self._out = []
        return out

    # -- input: streams -----------------------------------------------------------------------
    def stream_accepted(self, peer: bytes, ifname: str | None,
                        now: float) -> tuple[int, list[Output]]:
        """The edge accepted a TCP connection; returns the conn_id to report its messages with
        (and the outputs: in DULL, closing it at once)."""
        conn_id = self.new_id()
        self.streams[conn_id] = _Stream(peer, ifname)
        if self.config.dull:  # DULL has no unicast: hang up at once
            self.drop("dull_unicast", peer.hex())
            self.close_stream(conn_id)
        return conn_id, self._take()

    def receive_stream_data(self, conn_id: int, data: bytes, now: float) -> list[Output]:
        """Bytes as read from connection ``conn_id``: part of a message, one, or several
        (RFC 8990 §2.5.3: back-to-back CBOR items). Each whole message is handled as by
        receive_stream_message; a stream that breaks the framing (not CBOR, an item over
        tcp_max_size) is closed."""
        stream = self.streams.get(conn_id)
        if stream is None:
            self.drop("unknown_stream", conn_id)
            return []
        framer = stream.framer
        max_size = self.config.tcp_max_size
        if (framer is None or not framer.pending) and len(data) <= max_size:
            # the usual case: one read is exactly one message, decoded once here (the framer
            # would decode it to find that out, and then the message path again)
            try:
                decoded = decode_counted(data, max_size)
            except GraspDecodeError:
                pass  # part of one, several, or garbage: the framer decides
            else:
                self._stream_message(conn_id, stream, data, decoded, now)
                return self._take()
        if framer is None:
            framer = stream.framer = StreamFramer(max_size)
        try:
            messages = framer.feed(data)
        except GraspDecodeError as exc:
            self._neighbours.penalise((stream.ifname, stream.peer), self.config.garbage_cost)
            self.drop("stream_framing_error", exc)
            self._lost_stream(conn_id, now)
            return self._take()
        for message in messages:
            if self.streams.get(conn_id) is not stream:  # closed by the previous message
                break
            self._stream_message(conn_id, stream, message, None, now)
        return self._take()

    def receive_stream_message(self, conn_id: int, data: bytes, now: float) -> list[Output]:
        """One framed message arrived on connection ``conn_id``."""
        stream = self.streams.get(conn_id)
        if stream is None:
            self.drop("unknown_stream", conn_id)
            return []
        self._stream_message(conn_id, stream, data, None, now)
        out = self._out
        self._out = []
        return out

    def _stream_message(self, conn_id: int, stream: _Stream, data: bytes,
                        decoded: tuple[Message, int] | None, now: float) -> None:
        key = (stream.ifname, stream.peer)
        if not self._neighbours.take(key, now):
            return self.drop("rate_limited", stream.peer.hex())
        if decoded is None:
            try:
                decoded = decode_counted(data, self.config.tcp_max_size)
            except GraspDecodeError as exc:
                self._neighbours.penalise(key, self.config.garbage_cost)
                self.drop("decode_error", exc)
                return self._lost_stream(conn_id, now)
        msg, skipped = decoded
        if skipped:
            self._skipped(skipped)
        if isinstance(msg, Flood):  # ACP hop-by-hop flooding over link-local TCP (RFC 8994 §6.9.2)
            if stream.ifname is None:
                self.drop("flood_not_link_local_stream")
            else:
                self._on_flood(msg, stream.ifname, stream.peer, now)
        elif isinstance(msg, Discovery):
            self.discovery.on_discovery(msg, stream.ifname, stream.peer, None, conn_id, now)
        elif isinstance(msg, Response):
            self.discovery.on_response(msg, conn_id, stream, now)
        elif isinstance(msg, Noop):
            self.count("noop")
        else:
            self.sessions.on_message(msg, conn_id, stream, now)
        return None

    def stream_closed(self, conn_id: int, now: float) -> list[Output]:
        """The peer closed the connection (or it could not be opened)."""
        if conn_id in self.streams:
            del self.streams[conn_id]
            self.sessions.on_stream_lost(conn_id, now)
        return self._take()

    def _lost_stream(self, conn_id: int, now: float) -> None:
        self.close_stream(conn_id)
        self.sessions.on_stream_lost(conn_id, now)

    def _on_dull_discovery(self, msg: Discovery, ifname: str, src: bytes) -> None:
        """RFC 8990 §2.5.2: a DULL M_DISCOVERY is link-local multicast with loop count 1."""
        if msg.objective.loop_count != 1:
            return self.drop("dull_loop_count", msg.objective.loop_count)
        if msg.initiator in self._ifaces.values():
            return self.drop("own_discovery")  # looped back, or a twin on the same segment
        self.count("dull_discovery_heard")
        self._out.append(DiscoveryHeard(ifname, src, msg.objective))
        return None

    # -- floods -------------------------------------------------------------------------------
    def _on_flood(self, msg: Flood, ifname: str, src: bytes, now: float) -> None:
        first = msg.objectives[0].objective
        if self.config.dull:
            for tagged in msg.objectives:
                if tagged.objective.loop_count != 1:
                    return self.drop("dull_loop_count", tagged.objective.loop_count)
        elif first.loop_count != 1 and is_link_local(msg.initiator):
            # §2.5.6.2: a link-local-only flood must carry loop count 1. Inside the ACP every
            # relayed flood arrives from a link-local neighbour, so the initiator field (not
            # the transport source) decides whether a flood is link-local only.
            return self.drop("link_local_loop_count", first.loop_count)
        if msg.initiator == self.config.address or msg.initiator in self._ifaces.values():
            return self.drop("own_flood")
        if not self._flood_seen.add((msg.session_id, msg.initiator), now):
            return self.drop("duplicate_flood")
        self.count("flood_accepted")
        put = self.flood_cache.put
        for tagged in msg.objectives:
            entry = put(tagged.objective, tagged.locator, msg.initiator, ifname, msg.ttl, now)
            self._out.append(FloodReceived(ifname, msg.initiator, tagged.objective, tagged.locator,
                                           entry.expires, src, msg.ttl))
        if self.config.dull or first.loop_count <= 1 or len(self._ifaces) < 2:
            return None
        if not self.relay_budget.take(None, now):
            return self.drop("relay_rate_limited")
        relayed = (TaggedObjective(first.with_loop_count(first.loop_count - 1),
                                   msg.objectives[0].locator),) + msg.objectives[1:]
        self.count("flood_relayed")
        self.multicast(msg._replace(objectives=relayed), except_ifname=ifname)

    def flood(self, objectives: Sequence[TaggedObjective], ttl_ms: int, now: float,
              ifname: str | None = None) -> tuple[int, list[Output]]:
        """Send an M_FLOOD on every interface (or only ``ifname``); returns its Session ID."""
        if not objectives:
            raise GraspApiError(GraspError.notFloodDisc, "nothing to flood")
        if not 0 <= ttl_ms <= c.UINT32_MAX:
            raise GraspApiError(GraspError.unspec, "ttl out of range")
        for tagged in objectives:
            if not tagged.objective.synch:
                raise GraspApiError(GraspError.notSynch, tagged.objective.name)
        if ifname is not None and ifname not in self._ifaces:
            raise GraspApiError(GraspError.noSocket, f"no interface {ifname}")
        sid = self.session_ids.new(now)
        if not self.config.dull:
            self._flood_seen.add((sid, self.config.address), now)
            flood = Flood(sid, self.config.address, ttl_ms, tuple(objectives))
            if ifname is None:
                self.multicast(flood)
            else:
                self._out.append(SendMulticast(ifname, encode(flood)))
            return sid, self._take()
        targets = self._ifaces.items() if ifname is None else ((ifname, self._ifaces[ifname]),)
        for out_if, link_local in targets:
            local = tuple(TaggedObjective(t.objective.with_loop_count(1),
                                          _fill_locator(t.locator, link_local))
                          for t in objectives)
            self._out.append(SendMulticast(out_if, encode(Flood(sid, link_local, ttl_ms, local))))
        return sid, self._take()

    def solicit(self, objective: Objective, now: float,
                ifname: str | None = None) -> tuple[int, list[Output]]:
        """DULL only: an M_DISCOVERY for ``objective`` as link-local multicast with loop count 1
        on every interface (or only ``ifname``), our link-local address as initiator; nothing
        waits for responses (DULL has no unicast: what answers comes as floods). Returns its
        Session ID."""
        if not self.config.dull:
            raise GraspApiError(GraspError.notFloodDisc, "solicit is for DULL; use discover")
        if ifname is not None and ifname not in self._ifaces:
            raise GraspApiError(GraspError.noSocket, f"no interface {ifname}")
        sid = self.session_ids.new(now)
        local = objective.with_loop_count(1)
        targets = self._ifaces.items() if ifname is None else ((ifname, self._ifaces[ifname]),)
        for out_if, link_local in targets:
            self._out.append(SendMulticast(out_if, encode(Discovery(sid, link_local, local))))
        self.count("dull_solicited")
        return sid, self._take()

    def get_flood(self, name: str, now: float) -> list[FloodEntry]:
        """Unexpired cached floods of one objective (RFC 8991 get_flood)."""
        return self.flood_cache.get(name, now)

    # -- delegated API ------------------------------------------------------------------------
    def register_objective(self, objective: Objective, locators: Sequence[Locator] = (),
                           ttl_ms: int = c.GRASP_DEF_TIMEOUT) -> None:
        """Make ``objective`` discoverable here (answered with ``locators`` or our address)."""
        self.discovery.register(objective, tuple(locators), ttl_ms)

    def deregister_objective(self, name: str) -> None:
        """Stop answering discoveries, negotiation and synchronization requests for ``name``."""
        self.discovery.registered.pop(name, None)
        self.sessions.neg_listeners.pop(name, None)
        self.sessions.syn_listeners.pop(name, None)

    def stop_listen_negotiate(self, name: str) -> None:
        self.sessions.neg_listeners.pop(name, None)

    def stop_listen_synchronize(self, name: str) -> None:
        self.sessions.syn_listeners.pop(name, None)

    def discover(self, objective: Objective, now: float, timeout_ms: int | None = None,
                 first: bool = False) -> tuple[int, list[Output]]:
        """Start a discovery: (handle, outputs); a Discovered event with that handle follows
        (at the deadline; with ``first``, at the first response that brings a locator)."""
        handle = self.discovery.discover(objective, now, timeout_ms, first)
        return handle, self._take()

    def listen_negotiate(self, objective: Objective) -> None:
        self.sessions.listen_negotiate(objective)

    def listen_synchronize(self, objective: Objective) -> None:
        self.sessions.listen_synchronize(objective)

    def request_negotiate(self, objective: Objective, peer: Locator, now: float,
                          timeout_ms: int | None = None,
                          ifname: str | None = None) -> tuple[int, list[Output]]:
        handle = self.sessions.request_negotiate(objective, peer, now, timeout_ms, ifname)
        return handle, self._take()

    def negotiate_step(self, handle: int, objective: Objective, now: float) -> list[Output]:
        try:
            self.sessions.negotiate_step(handle, objective, now)
        except GraspApiError as exc:  # loop count exhausted: the session ended before refusing
            exc.outputs = self._take()
            raise
        return self._take()

    def negotiate_wait(self, handle: int, waiting_time_ms: int, now: float) -> list[Output]:
        self.sessions.negotiate_wait(handle, waiting_time_ms, now)
        return self._take()

    def end_negotiate(self, handle: int, accept: bool, now: float,
                      reason: str | None = None) -> list[Output]:
        self.sessions.end_negotiate(handle, accept, reason, now)
        return self._take()

    def synchronize(self, objective: Objective, peer: Locator | None, now: float,
                    timeout_ms: int | None = None,
                    ifname: str | None = None) -> tuple[int, list[Output]]:
        handle = self.sessions.synchronize(objective, peer, now, timeout_ms, ifname)
        return handle, self._take()

    def cache_sizes(self) -> dict[str, int]:
        """Entries held per cache: each has a bound (the config, or a fixed cap), so what a
        flood can make us keep is bounded; the bench and the status show these."""
        d, s = self.discovery, self.sessions
        return {
            "flood_cache": len(self.flood_cache),
            "seen_floods": len(self._flood_seen),
            "neighbour_buckets": len(self._neighbours),
            "relay_buckets": len(self.relay_budget),
            "relayed_discoveries": len(d._relays),
            "discovered_locators": sum(len(v) for v in d.cache.values()),
            "pending_discoveries": len(d._pending),
            "sessions": len(s._by_handle),
            "streams": len(self.streams),
            "recent_session_ids": len(self.session_ids._recent),
        }

    # -- time ---------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> list[Output]:
        """Expire caches and fail overdue exchanges; call at next_timer() or periodically."""
        self.flood_cache.expire(now)
        self._flood_seen.expire(now)
        self.session_ids.expire(now)
        self.discovery.handle_timer(now)
        self.sessions.handle_timer(now)
        return self._take()

    def next_timer(self) -> float | None:
        """When handle_timer next has work (None: nothing pending). The seen-pair caches only
        free memory, so a periodic call (e.g. every few seconds) suffices for them."""
        best = self.flood_cache.next_expiry()
        for t in (self.discovery.next_timer(), self.sessions.next_timer()):
            if t is not None and (best is None or t < best):
                best = t
        return best


def _fill_locator(locator: Locator | None, link_local: bytes) -> Locator | None:
    if locator is not None and locator.kind == c.O_IPv6_LOCATOR and locator.address == _UNSPECIFIED:
        return locator._replace(address=link_local)
    return locator

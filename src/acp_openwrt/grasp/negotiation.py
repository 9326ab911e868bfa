"""Negotiation and synchronization sessions (RFC 8990 §2.5.5, §2.5.6.1, §2.8.6-§2.8.10).

One session per TCP connection, on either side. Loop counts follow RFC 8990 Appendix A.5 and
graspy (digest B.11): a received M_NEGOTIATE's count minus one is what our next step carries;
a step with nothing left is not sent and the session fails (loopExhausted). Timers: a session
fails after ``session_timeout_ms`` without a message from the peer; M_WAIT replaces that
deadline with its waiting time. A Request whose (Session ID, peer) is already active is
discarded (§2.8.6); one for an objective nobody listens on closes the connection at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import constants as c
from .actions import NegotiationEnded, NegotiationRequested, NegotiationStep, SynchronizationDone
from .errors import GraspApiError, GraspError
from .messages import (
    End,
    Invalid,
    Locator,
    Negotiate,
    Objective,
    RequestNegotiation,
    RequestSynchronization,
    Synch,
    Wait,
    message_name,
)

if TYPE_CHECKING:
    from .engine import Engine, _Stream

# what the engine hands to on_message: every message type but M_FLOOD, M_DISCOVERY,
# M_RESPONSE and M_NOOP, which it handles itself
SessionMessage = (RequestNegotiation | RequestSynchronization | Negotiate | End | Wait | Synch
                  | Invalid)


class _Session:
    __slots__ = ("handle", "synch", "initiator", "conn_id", "sid", "key", "objective",
                 "loop_count", "deadline", "my_turn")

    def __init__(self, handle: int, synch: bool, initiator: bool, conn_id: int, sid: int,
                 key: tuple[int, bytes], objective: Objective, deadline: float) -> None:
        self.handle = handle
        self.synch = synch
        self.initiator = initiator  # we sent the request
        self.conn_id = conn_id
        self.sid = sid
        self.key = key
        self.objective = objective
        self.loop_count = objective.loop_count
        self.deadline = deadline
        self.my_turn = not initiator


class SessionRole:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.neg_listeners: dict[str, Objective] = {}
        self.syn_listeners: dict[str, Objective] = {}
        self._by_handle: dict[int, _Session] = {}
        self._by_conn: dict[int, _Session] = {}
        self._keys: set[tuple[int, bytes]] = set()

    # -- listening ----------------------------------------------------------------------------
    def listen_negotiate(self, objective: Objective) -> None:
        if not objective.neg:
            raise GraspApiError(GraspError.notNeg, objective.name)
        self.neg_listeners[objective.name] = objective

    def listen_synchronize(self, objective: Objective) -> None:
        """Serve ``objective`` (with its current value) to M_REQ_SYN; call again on change."""
        if not objective.synch:
            raise GraspApiError(GraspError.notSynch, objective.name)
        self.syn_listeners[objective.name] = objective

    # -- initiating ---------------------------------------------------------------------------
    def _start(self, synch: bool, objective: Objective, peer: Locator, now: float,
               timeout_ms: int | None, ifname: str | None) -> _Session:
        e = self.e
        if e.config.dull:
            raise GraspApiError(GraspError.noSecurity, "DULL instances only flood")
        address, port = peer.address, peer.port
        if (peer.kind not in (c.O_IPv6_LOCATOR, c.O_IPv4_LOCATOR) or peer.protocol != c.IPPROTO_TCP
                or not isinstance(address, bytes) or port is None):
            raise GraspApiError(GraspError.invalidLoc, "need a TCP address locator")
        if objective.loop_count < 1:
            raise GraspApiError(GraspError.loopExhausted, objective.name)
        sid = e.session_ids.new(now, {k[0] for k in self._keys if k[1] == e.config.address})
        conn_id = e.open_stream(ifname, address, port)
        timeout = (timeout_ms or e.config.session_timeout_ms) / 1000.0
        session = _Session(e.new_id(), synch, True, conn_id, sid, (sid, e.config.address),
                           objective, now + timeout)
        self._add(session)
        request = RequestSynchronization if synch else RequestNegotiation
        e.send_stream(conn_id, request(sid, objective))
        return session

    def request_negotiate(self, objective: Objective, peer: Locator, now: float,
                          timeout_ms: int | None, ifname: str | None) -> int:
        if not objective.neg:
            raise GraspApiError(GraspError.notNeg, objective.name)
        return self._start(False, objective, peer, now, timeout_ms, ifname).handle

    def synchronize(self, objective: Objective, peer: Locator | None, now: float,
                    timeout_ms: int | None, ifname: str | None) -> int:
        """M_REQ_SYN to ``peer``; with no peer, answer from the flood cache (RFC 8991)."""
        if not objective.synch:
            raise GraspApiError(GraspError.notSynch, objective.name)
        if peer is None:
            cached = self.e.flood_cache.get(objective.name, now)
            if not cached:
                raise GraspApiError(GraspError.noPeer, "no peer and nothing cached")
            handle = self.e.new_id()
            self.e.emit(SynchronizationDone(handle, cached[0].objective, GraspError.ok))
            return handle
        return self._start(True, objective, peer, now, timeout_ms, ifname).handle

    # -- stepping -----------------------------------------------------------------------------
    def _own_turn(self, handle: int) -> _Session:
        session = self._by_handle.get(handle)
        if session is None or session.synch:
            raise GraspApiError(GraspError.noSession, str(handle))
        if not session.my_turn:
            raise GraspApiError(GraspError.noValidStep, "waiting for the peer")
        return session

    def negotiate_step(self, handle: int, objective: Objective, now: float) -> None:
        session = self._own_turn(handle)
        if session.loop_count < 1:
            self._finish(session, NegotiationEnded(handle, False, "loop count exhausted",
                                                   GraspError.loopExhausted, session.objective))
            raise GraspApiError(GraspError.loopExhausted, objective.name)
        session.objective = objective.with_loop_count(session.loop_count)
        session.my_turn = False
        session.deadline = now + self.e.config.session_timeout_ms / 1000.0
        self.e.send_stream(session.conn_id, Negotiate(session.sid, session.objective))

    def negotiate_wait(self, handle: int, waiting_time_ms: int, now: float) -> None:
        session = self._own_turn(handle)
        if not 0 <= waiting_time_ms <= c.UINT32_MAX:
            raise GraspApiError(GraspError.unspec, "waiting time out of range")
        session.deadline = (now + waiting_time_ms / 1000.0
                            + self.e.config.session_timeout_ms / 1000.0)
        self.e.send_stream(session.conn_id, Wait(session.sid, waiting_time_ms))

    def end_negotiate(self, handle: int, accept: bool, reason: str | None, now: float) -> None:
        session = self._by_handle.get(handle)
        if session is None or session.synch:
            raise GraspApiError(GraspError.noSession, str(handle))
        self.e.send_stream(session.conn_id, End(session.sid, accept, None if accept else reason))
        self._forget(session)
        self.e.close_stream(session.conn_id)

    # -- receiving ----------------------------------------------------------------------------
    def on_message(self, msg: SessionMessage, conn_id: int, stream: _Stream, now: float) -> None:
        e = self.e
        session = self._by_conn.get(conn_id)
        # isinstance rather than type(msg) is X: as cheap on CPython 3.11+, and it narrows
        if isinstance(msg, (RequestNegotiation, RequestSynchronization)):
            if session is not None:
                return e.drop("request_in_session")
            return self._on_request(msg, conn_id, stream, now)
        if session is None or session.sid != msg.session_id:
            e.drop("no_session", message_name(msg))
            if not isinstance(msg, Invalid):  # §2.8.12: never answer M_INVALID with M_INVALID
                e.send_stream(conn_id, Invalid(msg.session_id))
            return None
        session.deadline = now + e.config.session_timeout_ms / 1000.0
        if isinstance(msg, Synch) and session.synch and session.initiator:
            return self._finish(session, SynchronizationDone(session.handle, msg.objective,
                                                             GraspError.ok))
        if session.synch:
            return self._fail(session, "unexpected message in synchronization",
                              GraspError.noValidSynch)
        if isinstance(msg, Negotiate) and not session.my_turn:
            if msg.objective.name != session.objective.name:
                return self._fail(session, "objective changed", GraspError.invalidNeg)
            session.objective = msg.objective
            session.loop_count = msg.objective.loop_count - 1
            session.my_turn = True
            return e.emit(NegotiationStep(session.handle,
                                          msg.objective.with_loop_count(session.loop_count)))
        if isinstance(msg, Wait) and session.initiator and not session.my_turn:
            session.deadline = now + msg.waiting_time / 1000.0
            return e.count("negotiation_wait")
        if isinstance(msg, End):
            error = GraspError.ok if msg.accept else GraspError.declined
            return self._finish(session, NegotiationEnded(session.handle, msg.accept, msg.reason,
                                                          error, session.objective))
        if isinstance(msg, Invalid):
            return self._fail(session, "peer sent M_INVALID", GraspError.invalidNeg)
        return self._fail(session, f"unexpected {message_name(msg)}", GraspError.noValidStep)

    def _on_request(self, msg: RequestNegotiation | RequestSynchronization, conn_id: int,
                    stream: _Stream, now: float) -> None:
        e = self.e
        synch = isinstance(msg, RequestSynchronization)
        listeners = self.syn_listeners if synch else self.neg_listeners
        name = msg.objective.name
        if name not in listeners:  # §2.8.6: close at once so the initiator need not time out
            e.drop("no_listener", name)
            return e.close_stream(conn_id)
        if synch:
            e.count("synchronization_answered")
            e.send_stream(conn_id, Synch(msg.session_id, listeners[name]))
            return e.close_stream(conn_id)
        key = (msg.session_id, stream.peer)
        if key in self._keys:
            return e.drop("session_clash")
        session = _Session(e.new_id(), False, False, conn_id, msg.session_id, key, msg.objective,
                           now + e.config.session_timeout_ms / 1000.0)
        self._add(session)
        e.emit(NegotiationRequested(session.handle, msg.objective, stream.peer))

    def on_stream_lost(self, conn_id: int, now: float) -> None:
        session = self._by_conn.get(conn_id)
        if session is not None:
            error = GraspError.noSynchReply if session.synch else GraspError.noNegReply
            self._fail(session, "connection closed", error, close=False)

    # -- bookkeeping --------------------------------------------------------------------------
    def _add(self, session: _Session) -> None:
        self._by_handle[session.handle] = session
        self._by_conn[session.conn_id] = session
        self._keys.add(session.key)

    def _forget(self, session: _Session) -> None:
        self._by_handle.pop(session.handle, None)
        self._by_conn.pop(session.conn_id, None)
        self._keys.discard(session.key)

    def _finish(self, session: _Session, event: object, close: bool = True) -> None:
        self._forget(session)
        if close:
            self.e.close_stream(session.conn_id)
        self.e.emit(event)

    def _fail(self, session: _Session, why: str, error: GraspError, close: bool = True) -> None:
        self.e.drop("session_failed", why)
        event = (SynchronizationDone(session.handle, None, error) if session.synch
                 else NegotiationEnded(session.handle, False, why, error, session.objective))
        self._finish(session, event, close)

    def handle_timer(self, now: float) -> None:
        for session in [s for s in self._by_handle.values() if s.deadline <= now]:
            self._fail(session, "timeout",
                       GraspError.noSynchReply if session.synch else GraspError.noNegReply)

    def next_timer(self) -> float | None:
        return min((s.deadline for s in self._by_handle.values()), default=None)

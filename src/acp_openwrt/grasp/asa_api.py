"""The RFC 8991 calls for ASAs, in-process and asyncio, on top of one engine.

``AsaApi`` is the half of ``GraspService`` that ASAs see; the other half (service.py) owns the
sockets and feeds the engine. Refusals raise ``GraspApiError`` whose ``code`` is the RFC 8991
error code (``declined`` carries the peer's reason in ``detail``); calls that wait for the
network are coroutines and return what RFC 8991 lists after the error code.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from . import constants as c
from .actions import (
    Discovered,
    DiscoveryHeard,
    FloodReceived,
    NegotiationEnded,
    NegotiationRequested,
    NegotiationStep,
    Output,
    SynchronizationDone,
)
from .engine import Engine
from .errors import GraspApiError, GraspError
from .flood_cache import FloodEntry
from .messages import Locator, Objective, TaggedObjective

MAX_MAILBOX = 1024     # undelivered session events kept (an ASA that never collects)
LISTEN_QUEUE = 16      # negotiation requests waiting for an ASA's listen_negotiate
FloodCallback = Callable[[FloodReceived], Any]
DiscoveryCallback = Callable[[DiscoveryHeard], Any]


class Asa(NamedTuple):
    """What register_asa hands back (RFC 8991's asa_nonce, with the name for logs)."""
    name: str
    nonce: int


class NegotiationReply(NamedTuple):
    """The peer's answer: ``handle`` None means the peer ended the session with O_ACCEPT and
    ``objective`` is the last value on the table; else it is the peer's counter-offer."""
    handle: int | None
    objective: Objective | None
    reason: str | None = None


FloodItem = TaggedObjective | tuple[Objective, Locator | None]


class AsaApi:
    """RFC 8991 calls; needs ``engine``, ``_execute()``, ``_feed()`` and ``_now()``."""

    engine: Engine

    def _api_init(self) -> None:
        self._asas: dict[int, Asa] = {}
        self._asa_names: dict[str, int] = {}
        self._objectives: dict[str, int] = {}            # name -> owning nonce
        self._flood_subs: dict[str, dict[int, FloodCallback]] = {}
        self._discovery_subs: dict[str, DiscoveryCallback] = {}  # DULL: name -> callback
        self._sub_ids = itertools.count(1)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._mail: collections.OrderedDict[int, collections.deque[Any]] = collections.OrderedDict()
        self._neg_queues: dict[str, tuple[int, asyncio.Queue[NegotiationRequested]]] = {}
        self._sessions: dict[int, int] = {}              # negotiation handle -> nonce

    # -- hooks the service provides -----------------------------------------------------------
    def _execute(self, outputs: Sequence[Output]) -> None:
        """Carry out what an engine call returned (safe to call from inside an execution)."""
        raise NotImplementedError

    def _feed(self, outputs: Sequence[Output]) -> None:
        """``_execute``, then re-arm the engine's timer (what an API call returns)."""
        raise NotImplementedError

    def _now(self) -> float:
        raise NotImplementedError

    # -- events from the engine ---------------------------------------------------------------
    def _flood_heard(self, event: FloodReceived) -> None:
        subs = self._flood_subs.get(event.objective.name)
        if subs:
            for callback in list(subs.values()):
                try:
                    callback(event)
                except Exception:
                    self.engine.count("flood_callback_error")
                    import logging
                    logging.getLogger(__name__).exception("on_flood callback failed")

    def _dispatch(self, event: Any) -> None:
        kind = type(event)
        if kind is FloodReceived:
            self._flood_heard(event)
        elif kind is DiscoveryHeard:
            callback = self._discovery_subs.get(event.objective.name)
            if callback is None:
                self.engine.count("dull_discovery_unheeded")
                return
            try:
                callback(event)
            except Exception:
                self.engine.count("discovery_callback_error")
                import logging
                logging.getLogger(__name__).exception("on_discovery callback failed")
        elif kind is NegotiationRequested:
            entry = self._neg_queues.get(event.objective.name)
            if entry is None or entry[1].full():
                self.engine.count("negotiation_refused_busy")
                self._execute(self.engine.end_negotiate(event.handle, False, self._now(), "busy"))
            else:
                self._sessions[event.handle] = entry[0]
                entry[1].put_nowait(event)
        elif kind in (Discovered, NegotiationStep, NegotiationEnded, SynchronizationDone):
            fut = self._waiters.pop(event.handle, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
                return
            box = self._mail.get(event.handle)
            if box is None:
                box = self._mail[event.handle] = collections.deque()
                if len(self._mail) > MAX_MAILBOX:
                    self._mail.popitem(last=False)
            box.append(event)

    async def _next_event(self, handle: int) -> Any:
        box = self._mail.get(handle)
        if box:
            event = box.popleft()
            if not box:
                del self._mail[handle]
            return event
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[handle] = fut
        try:
            return await fut
        finally:
            if self._waiters.get(handle) is fut:
                del self._waiters[handle]

    def _cancel_waiters(self) -> None:
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(GraspApiError(GraspError.noSession, "GRASP service stopped"))
        self._waiters.clear()

    def _call(self, fn: Callable[..., list[Output]], *args: Any) -> None:
        """Run an engine call, carry out what it returned and re-arm the timer."""
        try:
            outputs = fn(*args)
        except GraspApiError as exc:  # refused, perhaps after doing something
            self._feed(exc.outputs)
            raise
        self._feed(outputs)

    def _call_id(self, fn: Callable[..., tuple[int, list[Output]]], *args: Any) -> int:
        """``_call`` for the engine calls that return ``(handle or session id, outputs)``."""
        try:
            handle, outputs = fn(*args)
        except GraspApiError as exc:
            self._feed(exc.outputs)
            raise
        self._feed(outputs)
        return handle

    def _check(self, asa: Asa) -> None:
        if self._asas.get(asa.nonce) != asa:
            raise GraspApiError(GraspError.noASA, asa.name)

    # -- ASAs and objectives ------------------------------------------------------------------
    def register_asa(self, name: str) -> Asa:
        if not name:
            raise GraspApiError(GraspError.noASA, "empty ASA name")
        if name in self._asa_names:
            raise GraspApiError(GraspError.dupASA, name)
        nonce = random.SystemRandom().getrandbits(32)
        while nonce in self._asas:
            nonce = random.SystemRandom().getrandbits(32)
        asa = Asa(name, nonce)
        self._asas[nonce] = asa
        self._asa_names[name] = nonce
        return asa

    def deregister_asa(self, asa: Asa) -> None:
        """Forget the ASA and everything it registered; its pending listens are declined."""
        self._check(asa)
        for name in [n for n, owner in self._objectives.items() if owner == asa.nonce]:
            self.deregister_objective(asa, name)
        for handle in [h for h, owner in self._sessions.items() if owner == asa.nonce]:
            self._sessions.pop(handle, None)
            try:
                self._call(self.engine.end_negotiate, handle, False, self._now(), "ASA gone")
            except GraspApiError:
                pass
        del self._asas[asa.nonce]
        del self._asa_names[asa.name]

    def register_objective(self, asa: Asa, objective: Objective, ttl_ms: int = c.GRASP_DEF_TIMEOUT,
                           discoverable: bool = False, overlap: bool = False,
                           locators: Iterable[Locator] = ()) -> None:
        """Own ``objective``; ``discoverable`` answers M_DISCOVERY for it (ACP mode only)."""
        self._check(asa)
        owner = self._objectives.get(objective.name)
        if owner is not None and owner != asa.nonce and not overlap:
            raise GraspApiError(GraspError.objReg, objective.name)
        if discoverable:
            self.engine.register_objective(objective, tuple(locators), ttl_ms)
        self._objectives[objective.name] = asa.nonce

    def deregister_objective(self, asa: Asa, name: str) -> None:
        self._check(asa)
        if self._objectives.get(name) != asa.nonce:
            raise GraspApiError(GraspError.notYourObj, name)
        del self._objectives[name]
        self.engine.deregister_objective(name)
        self._stop_neg_queue(name)

    # -- discovery ----------------------------------------------------------------------------
    def discoverable(self, name: str) -> bool:
        """Whether an ASA here registered ``name`` to answer discoveries (it runs here)."""
        return name in self.engine.discovery.registered

    async def discover(self, asa: Asa, objective: Objective, timeout_ms: int | None = None,
                       flush: bool = False, first: bool = False) -> list[Locator]:
        """Locators of ``objective`` (timeout 0: from the cache only; flush: cache emptied
        first; first: return with the first response that brings any, not at the timeout)."""
        self._check(asa)
        if flush:
            self.engine.discovery.cache.pop(objective.name, None)
        handle = self._call_id(self.engine.discover, objective, self._now(), timeout_ms, first)
        event = await self._next_event(handle)
        return list(event.locators)

    # -- negotiation --------------------------------------------------------------------------
    async def _reply(self, handle: int, asa: Asa) -> NegotiationReply:
        event = await self._next_event(handle)
        if type(event) is NegotiationStep:
            return NegotiationReply(handle, event.objective)
        self._sessions.pop(handle, None)
        if event.accept:
            return NegotiationReply(None, event.objective, event.reason)
        raise GraspApiError(GraspError(event.error), event.reason or "")

    async def request_negotiate(self, asa: Asa, objective: Objective, peer: Locator,
                                timeout_ms: int | None = None, ifname: str | None = None
                                ) -> NegotiationReply:
        """M_REQ_NEG to ``peer``; returns the first answer (``ifname`` for a link-local peer)."""
        self._check(asa)
        handle = self._call_id(self.engine.request_negotiate, objective, peer, self._now(),
                               timeout_ms, ifname)
        self._sessions[handle] = asa.nonce
        return await self._reply(handle, asa)

    def _own_session(self, asa: Asa, handle: int) -> None:
        self._check(asa)
        owner = self._sessions.get(handle)
        if owner is None:
            raise GraspApiError(GraspError.noSession, str(handle))
        if owner != asa.nonce:
            raise GraspApiError(GraspError.notYourASA, str(handle))

    async def negotiate_step(self, asa: Asa, handle: int, objective: Objective) -> NegotiationReply:
        self._own_session(asa, handle)
        self._call(self.engine.negotiate_step, handle, objective, self._now())
        return await self._reply(handle, asa)

    def negotiate_wait(self, asa: Asa, handle: int, waiting_time_ms: int) -> None:
        self._own_session(asa, handle)
        self._call(self.engine.negotiate_wait, handle, waiting_time_ms, self._now())

    def end_negotiate(self, asa: Asa, handle: int, accept: bool, reason: str | None = None) -> None:
        self._own_session(asa, handle)
        self._sessions.pop(handle, None)
        self._mail.pop(handle, None)
        try:
            outputs = self.engine.end_negotiate(handle, accept, self._now(), reason)
        except GraspApiError as exc:
            self._feed(exc.outputs)
            raise
        # Ending a session only takes a deadline away, so the armed timer is right or early
        # (it then finds nothing due and re-arms): no re-arm on the negotiation's last step.
        self._execute(outputs)

    async def listen_negotiate(self, asa: Asa, objective: Objective) -> NegotiationRequested:
        """Wait for the next M_REQ_NEG for ``objective``: (handle, peer's objective, peer)."""
        self._check(asa)
        entry = self._neg_queues.get(objective.name)
        if entry is not None and entry[0] != asa.nonce:
            raise GraspApiError(GraspError.notYourObj, objective.name)
        if entry is None:
            self.engine.listen_negotiate(objective)
            entry = self._neg_queues[objective.name] = (asa.nonce, asyncio.Queue(LISTEN_QUEUE))
            self._objectives.setdefault(objective.name, asa.nonce)
        return await entry[1].get()

    def stop_listen_negotiate(self, asa: Asa, objective: Objective) -> None:
        self._check(asa)
        entry = self._neg_queues.get(objective.name)
        if entry is None or entry[0] != asa.nonce:
            raise GraspApiError(GraspError.notYourObj, objective.name)
        self._stop_neg_queue(objective.name)

    def _stop_neg_queue(self, name: str) -> None:
        self.engine.stop_listen_negotiate(name)
        entry = self._neg_queues.pop(name, None)
        if entry is None:
            return
        while not entry[1].empty():
            request = entry[1].get_nowait()
            self._sessions.pop(request.handle, None)
            try:
                self._call(self.engine.end_negotiate, request.handle, False, self._now(),
                           "not listening")
            except GraspApiError:
                pass

    # -- synchronization and flooding ---------------------------------------------------------
    async def synchronize(self, asa: Asa, objective: Objective, peer: Locator | None = None,
                          timeout_ms: int | None = None, ifname: str | None = None) -> Objective:
        """The peer's current value (no peer: from the flood cache)."""
        self._check(asa)
        handle = self._call_id(self.engine.synchronize, objective, peer, self._now(), timeout_ms,
                               ifname)
        event = await self._next_event(handle)
        if event.error != GraspError.ok or event.objective is None:
            raise GraspApiError(GraspError(event.error or GraspError.noSynchReply), objective.name)
        return event.objective

    def listen_synchronize(self, asa: Asa, objective: Objective) -> None:
        """Answer M_REQ_SYN for ``objective`` with this value (call again to change it)."""
        self._check(asa)
        self.engine.listen_synchronize(objective)
        self._objectives.setdefault(objective.name, asa.nonce)

    def stop_listen_synchronize(self, asa: Asa, objective: Objective) -> None:
        self._check(asa)
        self.engine.stop_listen_synchronize(objective.name)

    def flood(self, asa: Asa, ttl_ms: int, items: Iterable[FloodItem],
              ifname: str | None = None) -> int:
        """M_FLOOD of (objective, locator-or-None) pairs on every interface, or on ``ifname``;
        returns the Session ID. In DULL mode a locator address of ``::`` becomes the
        interface's link-local address."""
        self._check(asa)
        tagged = [t if isinstance(t, TaggedObjective) else TaggedObjective(*t) for t in items]
        return self._call_id(self.engine.flood, tagged, ttl_ms, self._now(), ifname)

    def solicit(self, asa: Asa, objective: Objective, ifname: str | None = None) -> int:
        """DULL only: M_DISCOVERY for ``objective`` (loop count 1) on every interface, or on
        ``ifname``, answered by nobody directly (no unicast in DULL): a neighbour that heard it
        (``on_discovery``) floods. Returns the Session ID."""
        self._check(asa)
        return self._call_id(self.engine.solicit, objective, self._now(), ifname)

    def on_discovery(self, name: str, callback: DiscoveryCallback) -> Callable[[], None]:
        """DULL only: call ``callback(DiscoveryHeard)`` for a neighbour's M_DISCOVERY of
        ``name`` (one subscriber per name); returns the function that unsubscribes."""
        self._discovery_subs[name] = callback

        def unsubscribe() -> None:
            if self._discovery_subs.get(name) is callback:
                del self._discovery_subs[name]
        return unsubscribe

    def get_flood(self, asa: Asa, objective: Objective | str) -> list[FloodEntry]:
        """Unexpired cached floods of one objective (one entry per locator)."""
        self._check(asa)
        name = objective if isinstance(objective, str) else objective.name
        return self.engine.get_flood(name, self._now())

    def on_flood(self, name: str, callback: FloodCallback) -> Callable[[], None]:
        """Call ``callback(FloodReceived)`` for every accepted flood of ``name`` (repeats too);
        returns the function that unsubscribes."""
        subs = self._flood_subs.setdefault(name, {})
        key = next(self._sub_ids)
        subs[key] = callback

        def unsubscribe() -> None:
            current = self._flood_subs.get(name)
            if current is not None:
                current.pop(key, None)
                if not current:
                    del self._flood_subs[name]
        return unsubscribe

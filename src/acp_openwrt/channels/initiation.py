"""The channel service's bounded work: candidates kept or parked, initiations started when a
slot frees, an attempt nobody answers given up early, charon's log lines turned into reasons
and knocks. The rules are attempts.py's (sans-I/O); this is their asyncio edge, as functions
of the service like reconcile.py.

One attempt: its channel gets its connection in charon (prepared) only once it holds a slot;
charon then initiates (a pool thread waits for the outcome). If no IKE_SA_INIT answer came
within `answer_timeout` (charon logs parsing the response; an SA event also counts), the
attempt is terminated in charon and its connection unloaded (PeerChannel's `Release`); the
candidate backs off, or steps back behind the parked ones. Its slot is freed either way.
Times are the part's clock (`svc.now()`, the loop's); nothing here polls.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from .attempts import Candidate, Key, victim
from .connection import CHILD_NAME
from .driver import DriverError, LogLine
from .peer_channel import Initiate, Release, State
from .reasons import NOT_ANSWERING, better, knock, reason_from_log
from .xfrm_interface import link_of_address

if TYPE_CHECKING:
    from .channel_table import Channel
    from .part import ChannelPart

LOG = logging.getLogger("acpd.channels")
ANSWERED = ("parsed IKE_SA_INIT response", "parsed IKE_AUTH response")
RELEASE_WAIT = 5.0   # charon ends the initiate call once the terminated SA is gone


# --- candidates ----------------------------------------------------------------------------

def _waiting(svc: ChannelPart) -> tuple[dict[str, int], int]:
    """Channels not up, per link and in all: what the candidate caps count."""
    per_link: dict[str, int] = {}
    for ch in svc.table:
        if ch.fsm.state is not State.UP:
            per_link[ch.dull_ifname] = per_link.get(ch.dull_ifname, 0) + 1
    return per_link, sum(per_link.values())


def _candidates(svc: ChannelPart, link: str | None) -> list[Candidate]:
    return [Candidate(ch.key, evictable=(not svc.slots.in_flight(ch.key) and not ch.fsm.sas
                                         and not ch.fsm.verified_once
                                         and ch.fsm.state is State.CONNECTING
                                         and ch.fsm.adopted_until is None),
                      failures=ch.fsm.failures, due=ch.fsm.retry_at)
            for ch in svc.table if link is None or ch.dull_ifname == link]


def admit(svc: ChannelPart, key: Key) -> Channel | None:
    """A channel for a new candidate, or None: it waits parked, at the end of the line. Past
    a cap a kept candidate that has failed steps back behind it, and the oldest parked one
    (maybe this one) takes its place: first come, first tried."""
    if _has_room(svc, key[0]):
        return svc.new_channel(key)
    if not svc.parking.park(key):
        return None  # the line is full: dropped (it may still knock)
    out = victim(_candidates(svc, key[0] if _link_full(svc, key[0]) else None))
    if out is not None and (ch := svc.table.get(*out)) is not None:
        _park(svc, ch)
        unpark(svc)
    return None


def _has_room(svc: ChannelPart, link: str) -> bool:
    per_link, total = _waiting(svc)
    return (per_link.get(link, 0) < svc.limits.candidates_per_interface
            and total < svc.limits.candidates_per_node)


def _link_full(svc: ChannelPart, link: str) -> bool:
    return _waiting(svc)[0].get(link, 0) >= svc.limits.candidates_per_interface


def _park(svc: ChannelPart, ch: Channel) -> None:
    """Step back: keep only the key (a candidate only a knock announced is dropped)."""
    svc.slots.cancel(ch.key)
    svc.table.remove(ch)   # now: the next one takes its place before the cleanup runs
    if ch.heard:
        svc.parking.park(ch.key)
    if ch.prepared:        # answered refusals keep their connection: drop it
        svc._dispatch(ch, ch.fsm.adjacency_down(svc.now()))


def unpark(svc: ChannelPart) -> None:
    """Parked candidates come back while there is room, oldest first."""
    if not len(svc.parking):
        return
    limits = svc.limits
    per_link, total = _waiting(svc)
    now = svc.now()
    while total < limits.candidates_per_node:
        room = {link: n < limits.candidates_per_interface for link, n in per_link.items()}
        key = svc.parking.next_for(room)
        if key is None:
            return
        ch = svc.new_channel(key)
        svc._dispatch(ch, ch.fsm.adjacency_up(now))
        per_link[key[0]] = per_link.get(key[0], 0) + 1
        total += 1


# --- slots ---------------------------------------------------------------------------------

def pump(svc: ChannelPart) -> None:
    """Start every initiation a slot is free for."""
    if not svc.running:
        return
    while started := svc.slots.take():
        for key in started:
            ch = svc.table.get(*key)
            if ch is None or not ch.fsm.wants_attempt():
                svc.slots.release(key)
                if ch is not None:
                    ch.fsm.attempt_dropped()
                continue
            svc.spawn(_attempt(svc, ch))
    svc.rearm()   # an attempt dropped or ended: its channel's next one may be timed again


async def _attempt(svc: ChannelPart, ch: Channel) -> None:
    """One attempt in its slot; what its failure releases is gone before the slot frees."""
    key = ch.key
    try:
        actions = await _run(svc, ch)
        if actions and svc.running:
            await svc._apply(ch, actions)
            if (any(isinstance(a, Release) for a in actions) and len(svc.parking)
                    and svc.table.get(*key) is ch):
                _park(svc, ch)   # silent: the oldest parked candidate gets its turn
                unpark(svc)
    finally:
        svc.slots.release(key)
        pump(svc)


async def _run(svc: ChannelPart, ch: Channel) -> list[Any]:
    ch.answered, ch.attempt_reason = False, None
    try:
        async with ch.lock:
            if svc.table.get(*ch.key) is not ch:
                return []   # removed or parked while it waited: prepare nothing for it
            await svc._prepare(ch)
    except (OSError, NetlinkError, DriverError) as exc:
        LOG.warning("channel %s %s: preparing failed: %s", ch.dull_ifname, ch.peer, exc)
        ch.prepared = False
        return ch.fsm.initiate_failed(svc.now(), f"Prepare: {exc}")
    assert svc.driver is not None
    LOG.debug("channel %s %s: prepared, initiating", ch.dull_ifname, ch.peer)
    loop = asyncio.get_running_loop()
    outcome = loop.run_in_executor(svc._init_ex, svc.driver.initiate, ch.conn, CHILD_NAME,
                                   svc.initiate_timeout)
    outcome.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen, if abandoned
    await asyncio.wait({outcome}, timeout=svc.answer_timeout)
    silent = not outcome.done() and not ch.answered and not ch.fsm.sas
    if silent:   # nothing came back: stop charon retransmitting, free the slot
        with contextlib.suppress(DriverError):
            await svc._vici("terminate_conn", ch.conn)
        with contextlib.suppress(DriverError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(outcome), RELEASE_WAIT)
    elif not outcome.done():   # answered: the driver's initiate_timeout bounds the rest
        await asyncio.wait({outcome})
    try:
        if not silent:
            outcome.result()
    except DriverError as exc:
        return _failed(svc, ch, str(exc))
    if silent:
        return _failed(svc, ch, NOT_ANSWERING)
    ch.fsm.initiate_succeeded()
    return []


def _failed(svc: ChannelPart, ch: Channel, error: str) -> list[Any]:
    reason = ch.attempt_reason
    answered = ch.answered or bool(ch.fsm.sas) or (reason is not None and reason.answered)
    if ch.fsm.sas:
        ch.fsm.initiate_succeeded()   # an SA is up (ours, slow, or the peer's): events decide
        return []
    text = reason.text if reason is not None else (error if answered else NOT_ANSWERING)
    LOG.info("channel %s %s: attempt failed: %s", ch.dull_ifname, ch.peer, text)
    return ch.fsm.initiate_failed(svc.now(), text, answered=answered)


# --- charon's log --------------------------------------------------------------------------

def heard_log(svc: ChannelPart, line: LogLine) -> None:
    """Attribute a charon log line: an answer, a cause of failure, or a knock."""
    ch = svc.table.by_conn(line.conn) if line.conn else None
    if ch is not None:
        if line.text.startswith(ANSWERED):
            ch.answered = True
        reason = reason_from_log(line.text)
        if reason is None:
            return
        if reason.answered:
            ch.answered = True
        ch.attempt_reason = better(ch.attempt_reason, reason)
        if ch.fsm.state is not State.UP and not svc.slots.in_flight(ch.key):
            ch.fsm.last_error = ch.attempt_reason.text if ch.attempt_reason else reason.text
        return
    ends = knock(line.text)
    if ends is not None:
        _knocked(svc, *ends)


def _knocked(svc: ChannelPart, me: str, peer: str) -> None:
    """A peer sent IKE_SA_INIT and found no connection: it is alive. Its channel is tried now,
    ahead of the line: taken out of parking (an untried candidate steps back for it if need
    be), or made from the knock alone when discovery never handed it over (its AN_ACP lost in
    a flood, or dropped when the line was full)."""
    now = svc.now()
    known = svc.table.with_peer(peer)
    for ch in known:
        _ahead(svc, ch, now, "the peer knocked")
    parked = svc.parking.with_peer(peer)
    for key in parked:
        svc.parking.remove(key)
        _let_in(svc, key, heard=True, now=now)
    if not known and not parked:
        svc.spawn(_knocked_unknown(svc, me, peer))


def alive(svc: ChannelPart, link: str, peer: str) -> None:
    """Discovery found the neighbour real (it answered an echo to all nodes on its link, so
    its address exists: discovery/liveness.py). Like a knock, its channel goes ahead of the
    untested candidates: out of parking, to the head of its link's line, or in at once."""
    key = (link, peer)
    ch = svc.table.get(link, peer)
    if ch is None:
        svc.parking.remove(key)
        _let_in(svc, key, heard=True, now=svc.now())
        return
    _ahead(svc, ch, svc.now(), "the neighbour answered")


def _ahead(svc: ChannelPart, ch: Channel, now: float, why: str) -> None:
    """The peer is alive: its attempt goes ahead of the line, whether it already waits in it
    (moved up) or waits on its back-off (tried now)."""
    if svc.slots.waiting(ch.key):
        svc.slots.request(ch.key, urgent=True)
        pump(svc)
        return
    actions = ch.fsm.knocked(now)
    if actions:
        LOG.info("channel %s %s: %s, trying it now", ch.dull_ifname, ch.peer, why)
        svc._dispatch(ch, actions)


async def _knocked_unknown(svc: ChannelPart, me: str, peer: str) -> None:
    link = svc.link_of.get(me)
    if link is None:
        with contextlib.suppress(OSError, NetlinkError):
            link = await svc._in(svc._dull_ex, link_of_address, me)
        if link is None:
            return
        svc.link_of[me] = link
    if svc.table.get(link, peer) is None and (link, peer) not in svc.parking:
        _let_in(svc, (link, peer), heard=False, now=svc.now())


def _let_in(svc: ChannelPart, key: Key, *, heard: bool, now: float) -> None:
    if not _has_room(svc, key[0]):
        out = victim(_candidates(svc, key[0] if _link_full(svc, key[0]) else None),
                     for_knock=True)
        if out is None or (ch := svc.table.get(*out)) is None:
            if heard:
                svc.parking.park(key)
            return
        _park(svc, ch)
    new = svc.new_channel(key)
    new.heard = heard
    LOG.info("channel %s %s: a knock lets it in, trying it now", key[0], key[1])
    svc._dispatch(new, [Initiate(urgent=True) if isinstance(a, Initiate) else a
                        for a in new.fsm.adjacency_up(now)])

"""The part's channels: lookup by (link, peer) and by connection name, if_id allocation, the
timers of all channels for one loop timer, and the operator's view (`acpctl channels`).

The table is what the part's CoreTimer runs (docs/core-contract.md): `next_timer()` is the
soonest of its channels' PeerChannel.next_timer(), `handle_timer(now)` asks each channel that is
due and returns, per channel, the actions it gave.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .attempts import InitiationSlots
from .connection import conn_name
from .driver import IkeSa
from .peer_channel import Action, PeerChannel, State
from .reasons import Reason

IF_ID_MAX = 0xFFFFFFFE


@dataclass
class Channel:
    """One channel: its PeerChannel (the protocol) and what the part keeps for it."""
    peer: str
    dull_ifname: str
    if_id: int
    fsm: PeerChannel
    acp_ifname: str | None = None
    local_ll: str | None = None
    prepared: bool = False
    # an xfrm interface or route of this channel may exist (activated once, or adopted): an
    # attempt that never got a verified SA (a forged neighbour) has none to delete
    kernel: bool = False
    heard: bool = True                     # discovery announced it (not only a knock)
    initial_contact: bool = False          # our charon restarted: say so in the next IKE_AUTH
    answered: bool = False                 # this attempt: the peer answered IKE_SA_INIT
    attempt_reason: Reason | None = None   # this attempt: the cause charon logged
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key(self) -> tuple[str, str]:
        return (self.dull_ifname, self.peer)

    @property
    def conn(self) -> str:
        return conn_name(self.if_id, self.dull_ifname)


class Due(NamedTuple):
    """What one channel's timer gave."""
    channel: Channel
    actions: list[Action]


class ChannelTable:
    def __init__(self, if_id_base: int = 0x100) -> None:
        self.if_id_base = if_id_base
        self._by_key: dict[tuple[str, str], Channel] = {}
        self._by_conn: dict[str, Channel] = {}

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, dull_ifname: str, peer: str) -> Channel | None:
        return self._by_key.get((dull_ifname, peer))

    def by_conn(self, conn: str) -> Channel | None:
        return self._by_conn.get(conn)

    def allocate_if_id(self) -> int:
        """Lowest free if_id from the base: ids are per DULL namespace, so per node."""
        used = {ch.if_id for ch in self._by_key.values()}
        if_id = self.if_id_base
        while if_id in used:
            if_id += 1
        if if_id > IF_ID_MAX:
            raise RuntimeError("no free xfrm if_id")
        return if_id

    def add(self, ch: Channel) -> None:
        self._by_key[(ch.dull_ifname, ch.peer)] = ch
        self._by_conn[ch.conn] = ch

    def remove(self, ch: Channel) -> None:
        if self._by_key.get((ch.dull_ifname, ch.peer)) is ch:
            del self._by_key[(ch.dull_ifname, ch.peer)]
            self._by_conn.pop(ch.conn, None)

    def with_peer(self, peer: str) -> list[Channel]:
        return [ch for ch in self._by_key.values() if ch.peer == peer]

    def keys(self) -> set[tuple[str, str]]:
        return set(self._by_key)

    # --- the core contract, for all channels at once ---
    def next_timer(self) -> float | None:
        times = [t for ch in self._by_key.values() if (t := ch.fsm.next_timer()) is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Due]:
        out = []
        for ch in list(self._by_key.values()):
            due = ch.fsm.next_timer()
            if due is not None and due <= now:
                actions = ch.fsm.handle_timer(now)
                if actions:
                    out.append(Due(ch, actions))
        return out

    def entries(self, sas: Sequence[IkeSa], now: float | None = None,
                slots: InitiationSlots | None = None) -> list[dict[str, Any]]:
        """One JSON-ready entry per channel; SA age and bytes from a list-sas answer; with
        `now` (monotonic) also when the next attempt is due (operators ask "when is it tried"),
        with `slots` whether it is in flight or waiting for one."""
        out = []
        for ch in self:
            mine = [sa for sa in sas if sa.conn == ch.conn and sa.state == "ESTABLISHED"]
            children = [c for sa in mine for c in sa.children if c.state == "INSTALLED"]
            up = ch.fsm.state is State.UP and ch.acp_ifname is not None
            state = "up" if up else ("activating" if ch.fsm.state is State.UP
                                     else ch.fsm.state.value)
            out.append({
                "interface": ch.acp_ifname,
                "peer": ch.peer,
                "dull_interface": ch.dull_ifname,
                "peer_node_name": ch.fsm.peer_node_name,
                "state": state,
                "role": ch.fsm.role.value,
                "if_id": ch.if_id,
                "ike_sas": len(mine),
                "child_sas": len(children),
                "sa_age": max((sa.established for sa in mine), default=None),
                "newest_sa_age": min((sa.established for sa in mine), default=None),
                "bytes": sum(c.bytes_in + c.bytes_out for c in children) if children else None,
                "bytes_in": sum(c.bytes_in for c in children) if children else None,
                "bytes_out": sum(c.bytes_out for c in children) if children else None,
                "last_error": ch.fsm.last_error,
                "failures": ch.fsm.failures,
                "initiating": slots.in_flight(ch.key) if slots else ch.fsm.pending,
                "queued": bool(slots and slots.waiting(ch.key)),
                "retry_in_s": (round(max(0.0, ch.fsm.retry_at - now), 1)
                               if now is not None and ch.fsm.retry_at is not None
                               and ch.fsm.state is State.CONNECTING else None),
                "adopted": ch.fsm.adopted_until is not None,
            })
        return sorted(out, key=lambda e: (e["dull_interface"], e["peer"]))

"""The service's channels: lookup by (link, peer) and by connection name, if_id allocation,
and the operator's view (`acpctl channels`)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .attempts import InitiationSlots
from .driver import IkeSa
from .peer_channel import State

if TYPE_CHECKING:
    from .part import Channel

IF_ID_MAX = 0xFFFFFFFE


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
                "adopted": ch.adopted_until is not None,
            })
        return sorted(out, key=lambda e: (e["dull_interface"], e["peer"]))

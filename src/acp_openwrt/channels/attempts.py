"""Bounded channel work (issue 15), without I/O: which initiations start now, which candidates
are kept, which are parked.

Every neighbour that DULL discovery announces is a candidate for a secure channel, and nothing
tells a real neighbour from a forged AN_ACP locator before it answers IKE. An attempt costs a
connection in charon, an xfrm interface, a route and seconds of retransmissions; a hostile link
announcing thousands of locators must not turn into thousands of those. So:

  * `InitiationSlots`: at most `per_interface` initiations in flight per DULL link and
    `per_node` in all. The rest wait in line: per link in the order they asked, the links
    served in turn, so a flooded link never starves a neighbour on another one, and on the
    flooded link each candidate's turn comes after at most (waiting on it / per_interface)
    attempts. A candidate that knocked (sent us IKE: alive) goes to the head of its line and
    may take one slot beyond both caps, so a flood of silent fakes never delays it by more
    than one slot's worth.
  * `Parking`: past the candidate caps a newcomer waits as a bare key (link, peer), in order
    of arrival; a kept candidate steps back to the end of that line when its attempt got no
    answer while others wait parked (or, having failed, when a newcomer needs its place), and
    the oldest parked key takes its place. So candidates are tried first come, first served,
    each once before any is tried again, and a real neighbour's turn comes after those heard
    before it, however many fakes arrive after it (discovery's evictions shorten the line).
    Past `size` newcomers are dropped, never the waiting ones (a dropped real neighbour still
    gets in by knocking).
Back-off (how long a failed candidate waits for its next turn) is the PeerChannel's.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]   # (DULL link, peer link-local)


@dataclass(frozen=True)
class Limits:
    per_interface: int = 4      # initiations in flight on one DULL link
    per_node: int = 8           # ... on all links together
    candidates_per_interface: int = 32   # channels not up, kept per link
    candidates_per_node: int = 128       # ... on all links together
    parked: int = 4096          # keys kept beyond those (about 150 bytes each)


class InitiationSlots:
    """Initiations in flight, capped per link and per node; the rest wait their turn."""

    def __init__(self, per_interface: int, per_node: int) -> None:
        self.per_interface, self.per_node = per_interface, per_node
        self._lines: dict[str, dict[Key, None]] = {}   # link -> waiting keys, in order
        self._turns: OrderedDict[str, None] = OrderedDict()  # links with waiting keys
        self._flying: dict[Key, None] = {}
        self._flying_on: dict[str, int] = {}
        self._urgent: set[Key] = set()
        self._again: dict[Key, bool] = {}   # asked for while in flight -> urgent; queued at release
        self.started = 0

    def request(self, key: Key, urgent: bool = False) -> None:
        """Wait for a slot (no-op if already waiting, unless urgent moves it up). Asked for
        while its attempt is still in flight (a knock during a failed attempt's clean-up), it
        is queued when that attempt releases its slot: dropped, its channel would wait for an
        attempt that never comes."""
        if key in self._flying:
            self._again[key] = self._again.get(key, False) or urgent
            return
        link = key[0]
        line = self._lines.setdefault(link, {})
        if urgent:  # behind earlier knocks, ahead of the rest: knocks cannot starve each other
            line.pop(key, None)
            self._urgent.add(key)
            first = {k: None for k in line if k in self._urgent}
            self._lines[link] = line = {**first, key: None,
                                        **{k: None for k in line if k not in first}}
        else:
            line.setdefault(key, None)
        self._turns.setdefault(link, None)

    def cancel(self, key: Key) -> None:
        """No longer waiting (the channel came up as responder, or went away)."""
        self._urgent.discard(key)
        self._again.pop(key, None)
        line = self._lines.get(key[0])
        if line is not None:
            line.pop(key, None)
            if not line:
                self._drop_line(key[0])

    def take(self) -> list[Key]:
        """The keys whose initiation may start now (now in flight), links served in turn."""
        out: list[Key] = []
        progress = True
        while progress:
            progress = False
            for link in list(self._turns):
                line = self._lines[link]
                key = next(iter(line))
                extra = 1 if key in self._urgent else 0
                if len(self._flying) >= self.per_node + extra or \
                        self._flying_on.get(link, 0) >= self.per_interface + extra:
                    continue
                del line[key]
                self._urgent.discard(key)
                if not line:
                    self._drop_line(link)
                else:
                    self._turns.move_to_end(link)  # the next slot goes to another link first
                self._flying[key] = None
                self._flying_on[link] = self._flying_on.get(link, 0) + 1
                self.started += 1
                out.append(key)
                progress = True
        return out

    def release(self, key: Key) -> None:
        """The initiation ended (either way): its slot is free."""
        if key in self._flying:
            del self._flying[key]
            left = self._flying_on[key[0]] - 1
            if left:
                self._flying_on[key[0]] = left
            else:
                del self._flying_on[key[0]]
        again = self._again.pop(key, None)
        if again is not None:
            self.request(key, urgent=again)

    def in_flight(self, key: Key) -> bool:
        return key in self._flying

    def waiting(self, key: Key) -> bool:
        return key in self._lines.get(key[0], {})

    def _drop_line(self, link: str) -> None:
        self._lines.pop(link, None)
        self._turns.pop(link, None)

    def status(self) -> dict[str, Any]:
        return {"in_flight": len(self._flying), "waiting": sum(map(len, self._lines.values())),
                "per_interface": self.per_interface, "per_node": self.per_node,
                "started": self.started}


class Parking:
    """Candidates beyond the caps, as bare keys, oldest first; bounded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[Key, None] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def park(self, key: Key) -> bool:
        """At the end of the line; False (dropped) when the line is full."""
        if key in self._keys:
            return True
        if len(self._keys) >= self.size:
            self.dropped += 1
            return False
        self._keys[key] = None
        return True

    def remove(self, key: Key) -> bool:
        if key not in self._keys:
            return False
        del self._keys[key]
        return True

    def with_peer(self, peer: str) -> list[Key]:
        return [key for key in self._keys if key[1] == peer]

    def drop_interface(self, link: str) -> None:
        for key in [k for k in self._keys if k[0] == link]:
            del self._keys[key]

    def next_for(self, room: dict[str, bool] | None = None,
                 node_room: bool = True) -> Key | None:
        """The oldest parked key that fits: `room` says per link whether it has room (links
        not named have room). None when nothing fits."""
        if not node_room:
            return None
        for key in self._keys:
            if room is None or room.get(key[0], True):
                del self._keys[key]
                return key
        return None


@dataclass(frozen=True)
class Candidate:
    """What eviction needs to know of one channel that is not up."""
    key: Key
    evictable: bool      # no SA, not in flight, never verified: nothing lost but its turn
    failures: int
    due: float | None


def victim(candidates: list[Candidate], for_knock: bool = False) -> Key | None:
    """The candidate to park to make room for a newcomer: the one that failed most (at least
    once), the furthest from its next attempt among equals. None if none has failed: then
    the newcomer waits parked instead (first come, first tried), unless it knocked (it is
    alive, the others are unknown): then the newest untried candidate steps back."""
    evictable = [c for c in candidates if c.evictable]
    failed = [c for c in evictable if c.failures > 0]
    if not failed:
        return evictable[-1].key if for_knock and evictable else None
    best = max(failed, key=lambda c: (c.failures, c.due if c.due is not None else float("inf")))
    return best.key

"""When a pledge asks its links for a join proxy, without I/O.

RFC 8995 §4.1 has a pledge listen for AN_Proxy floods; a proxy floods them periodically (every
10 s here, discovery/part.py), so a pledge that starts next to a proxy already serving heard
it only at that proxy's next flood. DULL GRASP (RFC 8990 §2.5.2) lets any node send M_DISCOVERY
as link-local multicast with loop count 1, and §4.1 allows a pledge other active methods beside
listening, backed off by doubling up to an hour and reset by a link change. So a pledge sends
an M_DISCOVERY for AN_Proxy when a link comes up, again after 1, 2, 4 ... s (at most an hour
apart), and a join proxy that hears it floods its AN_Proxy at once (an answer by flood: DULL
has no unicast for an M_RESPONSE). A proxy that starts serving later floods anyway (at once),
so the retries only cover a lost datagram.

A protocol core (docs/core-contract.md): `link_up(ifname, now)` returns the solicitation to
send now and schedules the next; `handle_timer(now)` returns those due; `link_down` forgets.
"""
from __future__ import annotations

from dataclasses import dataclass

FIRST_RETRY = 1.0      # seconds after the first solicitation on a link
MAX_RETRY = 3600.0     # RFC 8995 §4.1: active methods back off to at most one hour


@dataclass(frozen=True)
class Solicit:
    """Send an M_DISCOVERY for AN_Proxy on this DULL link."""
    ifname: str


class SolicitBackoff:
    def __init__(self, first: float = FIRST_RETRY, maximum: float = MAX_RETRY) -> None:
        self.first = first
        self.maximum = maximum
        self._due: dict[str, tuple[float, float]] = {}   # ifname -> (next time, its interval)
        self.counters = {"solicitations": 0}

    def link_up(self, ifname: str, now: float) -> list[Solicit]:
        """A link (re)appeared: solicit at once and restart its back-off."""
        self._due[ifname] = (now + self.first, self.first)
        self.counters["solicitations"] += 1
        return [Solicit(ifname)]

    def link_down(self, ifname: str) -> None:
        self._due.pop(ifname, None)

    def stop(self) -> None:
        """No more solicitations (the node has its LDevID, or no longer pledges)."""
        self._due.clear()

    def next_timer(self) -> float | None:
        return min((due for due, _ in self._due.values()), default=None)

    def handle_timer(self, now: float) -> list[Solicit]:
        out = []
        for ifname, (due, interval) in list(self._due.items()):
            if due <= now:
                interval = min(interval * 2, self.maximum)
                self._due[ifname] = (now + interval, interval)
                self.counters["solicitations"] += 1
                out.append(Solicit(ifname))
        return out

"""Who is really on the link: one ICMPv6 echo to all nodes tells real neighbours from spoofed
locators (issue 15), sans-I/O.

A host that spoofs thousands of link-local source addresses can make each of them send AN_ACP,
and nothing in a flood tells them from a real neighbour: only trying costs something. An IKE
attempt costs a slot for seconds (4 per link), so a real newcomer on a flooded link waited
behind hundreds of fakes. The spoofed addresses, though, do not exist: nobody answers ND or an
echo request for them. So when an unconfirmed neighbour is heard, the node sends one echo
request to ff02::1 on that link (at most one per `min_gap_s` per link, however many
newcomers). Every real node there answers from its own link-local address. A neighbour is
alive when it answered and sent AN_ACP, in either order: an answer from a recent AN_ACP
source, or AN_ACP from a recent answerer (under a flood of thousands of fakes a real
neighbour's flood is soon pushed out of the recent sources, but the few real answerers are
remembered). The edge then confirms it in the adjacency table and its channel is tried at
once, ahead of the untested ones.

One multicast request per second at most, whatever the flood's size, and no neighbour-cache
entry per fake (a unicast probe to each would fill the kernel's ND table). A host that also
answers echoes for its fakes defeats the test; then the bounds of the adjacency table and
of the channel attempts still hold (they are what they were without this). Linux answers
multicast echo requests unless net.ipv6.icmp.echo_ignore_multicast is set.

A protocol core (docs/core-contract.md): inputs carry `now`; `next_timer()`/`handle_timer()`
send the probe a link still owes; outputs are returned.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """Send one echo request to ff02::1 on this DULL link."""
    ifname: str


@dataclass(frozen=True)
class Offer:
    """What a neighbour's AN_ACP offered, kept so that it can be readmitted once it answered."""
    methods: tuple[str, ...]
    port: int
    ttl_ms: int


@dataclass(frozen=True)
class Alive:
    """`peer` sent AN_ACP on `ifname` lately and answered our echo: a real host."""
    peer: str
    ifname: str
    offer: Offer


class LivenessProbe:
    """Per link: when a probe is owed, when the last one left, recent AN_ACP sources."""

    def __init__(self, min_gap_s: float = 1.0, recent: int = 1024, answerers: int = 256,
                 answer_window_s: float = 5.0, answer_memory_s: float = 30.0) -> None:
        self.min_gap_s = min_gap_s
        self.recent_max = recent          # per link: AN_ACP sources remembered (oldest go)
        self.answerers_max = answerers    # per link: answerers remembered (oldest go)
        self.answer_window_s = answer_window_s  # an answer counts this long after a probe
        self.answer_memory_s = answer_memory_s  # an answerer's AN_ACP counts this long after
        self._last: dict[str, float] = {}       # ifname -> when the last probe left
        self._owed: dict[str, float] = {}       # ifname -> when the owed probe may leave
        self._recent: dict[str, OrderedDict[str, Offer]] = {}
        self._answerers: dict[str, OrderedDict[str, float]] = {}  # source -> when it answered
        self.counters = {"probes": 0, "answers": 0, "alive": 0, "answers_unsolicited": 0,
                         "answers_unknown": 0}

    def heard(self, ifname: str, peer: str, offer: Offer,
              now: float) -> list[Probe | Alive]:
        """An unconfirmed neighbour's AN_ACP: alive if it answered lately; else remember the
        source and ask the link soon."""
        answerers = self._answerers.get(ifname)
        if answerers is not None:
            when = answerers.pop(peer, None)
            if when is not None and now - when <= self.answer_memory_s:
                self.counters["alive"] += 1
                return [Alive(peer, ifname, offer)]
        recent = self._recent.setdefault(ifname, OrderedDict())
        recent[peer] = offer
        recent.move_to_end(peer)
        if len(recent) > self.recent_max:
            recent.popitem(last=False)
        if ifname in self._owed:
            return []
        due = self._last.get(ifname, -1e18) + self.min_gap_s
        if due <= now:
            return list(self._send(ifname, now))
        self._owed[ifname] = due
        return []

    def answered(self, ifname: str, source: str, now: float) -> list[Alive]:
        """An echo reply from `source` on `ifname`: alive if it is a recent AN_ACP source,
        else remembered for its AN_ACP to come."""
        last = self._last.get(ifname)
        if last is None or now - last > self.answer_window_s:
            self.counters["answers_unsolicited"] += 1
            return []
        self.counters["answers"] += 1
        offer = self._recent.get(ifname, OrderedDict()).pop(source, None)
        if offer is None:
            self.counters["answers_unknown"] += 1  # no AN_ACP from it lately (yet)
            answerers = self._answerers.setdefault(ifname, OrderedDict())
            answerers[source] = now
            answerers.move_to_end(source)
            if len(answerers) > self.answerers_max:
                answerers.popitem(last=False)
            return []
        self.counters["alive"] += 1
        return [Alive(source, ifname, offer)]

    def forget(self, ifname: str) -> None:
        """The link went away."""
        for table in (self._last, self._owed, self._recent, self._answerers):
            table.pop(ifname, None)

    def next_timer(self) -> float | None:
        return min(self._owed.values(), default=None)

    def handle_timer(self, now: float) -> list[Probe]:
        out: list[Probe] = []
        for ifname, when in list(self._owed.items()):
            if when <= now:
                del self._owed[ifname]
                out += self._send(ifname, now)
        return out

    def _send(self, ifname: str, now: float) -> list[Probe]:
        self._last[ifname] = now
        self.counters["probes"] += 1
        return [Probe(ifname)]

    def status(self) -> dict[str, object]:
        return {**self.counters, "remembered": sum(len(r) for r in self._recent.values()),
                "answerers": sum(len(r) for r in self._answerers.values())}

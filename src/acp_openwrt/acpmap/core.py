"""The ACP at a glance: gathering every node's report into one map, sans-I/O.

Every node answers M_REQ_SYN for the GRASP objective `OBJECTIVE` with its own report (a CBOR
map, `report.build_report`): ACP address, acp-node-name, roles, RPL state and rank, the ACP
address of its preferred RPL parent, and the ACP addresses of the peers it has secure channels
to. The node asked for the map (`acpctl map`) starts from its own report and a few seeds (on
an RPL root: every node its DAO routes name), asks every address it learns of (channel peers,
parents, seeds) for its report with GRASP synchronization, and goes on breadth-first until no
address is left, a cap is hit or the deadline passes (docs/acpmap.md).

`MapGatherer` follows the core contract (docs/core-contract.md): no sockets and no clock; the
edge (`acpmap/part.py`) carries out its `Ask` outputs (one synchronization each) and feeds the
answers back with `answered`/`failed`; `handle_timer` gives up asks that are overdue and
everything at the deadline. It ends with one `Finished` output; `result()` is then the map.

Bounded: a hostile or broken node cannot blow the map up. At most `max_nodes` addresses are
ever asked (more are counted, not kept), `max_parallel` asks run at once, each has
`ask_timeout` and the whole gathering `deadline`; a report is cut to `max_channels` peers and
short strings, and only addresses inside the domain's ULA prefix are followed. A report larger
than `max_report_bytes` (CBOR) or malformed is refused and counted.
"""
from __future__ import annotations

import ipaddress
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cbor2

# A private objective name (not IANA-registered; RFC 8990 §2.10.1 asks such names to carry a
# colon and a Private Enterprise Number; 32473 is the documentation PEN of RFC 5612).
OBJECTIVE = "ACP-node-report:32473"
REPORT_VERSION = 1
ROLES = ("registrar", "root")
STATES = ("root", "attached", "detached", "no-rpl")
MAX_NAME = 256       # characters of an acp-node-name kept
MAX_TEXT = 32        # characters of any other string kept


@dataclass(frozen=True)
class Limits:
    max_nodes: int = 256           # addresses asked (and nodes on the map), the origin included
    max_channels: int = 64         # channel peers kept per report
    max_report_bytes: int = 8192   # a report's CBOR size
    max_parallel: int = 8          # synchronizations at once
    ask_timeout: float = 2.0       # seconds for one synchronization
    deadline: float = 7.0          # seconds for the whole gathering (ubus gives a call 10 s)


class Ask(NamedTuple):
    """Ask `address` for its report (one GRASP synchronization, at most `timeout` s)."""
    address: str
    timeout: float


class Finished(NamedTuple):
    """The gathering is over: `result()` is the map."""
    complete: bool


Output = Ask | Finished


@dataclass
class NodeReport:
    """One node's report, checked and cut to the limits."""
    address: str
    name: str | None = None
    roles: list[str] = field(default_factory=list)
    state: str | None = None
    rank: int | None = None
    parent: str | None = None
    channels: list[str] = field(default_factory=list)

    def to_value(self) -> dict[str, Any]:
        """The objective value sent on the wire (CBOR map, text keys)."""
        return {"v": REPORT_VERSION, "address": self.address, "name": self.name,
                "roles": list(self.roles), "state": self.state, "rank": self.rank,
                "parent": self.parent, "channels": list(self.channels)}


class ReportError(ValueError):
    """A report that is not one (the reason is the counter's name)."""


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    return value[:limit] if value.isprintable() else None


def _address(value: Any, prefix: ipaddress.IPv6Network | None) -> str | None:
    """The text form of an IPv6 address inside `prefix` (any unicast one without a prefix)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        return None
    if prefix is not None and addr not in prefix:
        return None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_link_local:
        return None
    return str(addr)


def parse_report(value: Any, *, prefix: ipaddress.IPv6Network | None,
                 limits: Limits = Limits()) -> tuple[NodeReport, int]:
    """A report from an objective value: (report, peers cut). Raises ReportError."""
    if not isinstance(value, dict):
        raise ReportError("report_not_a_map")
    try:
        size = len(cbor2.dumps(value))
    except Exception as exc:  # a value cbor2 cannot re-encode is no report of ours
        raise ReportError("report_not_encodable") from exc
    if size > limits.max_report_bytes:
        raise ReportError("report_too_large")
    if value.get("v") != REPORT_VERSION:
        raise ReportError("report_version")
    address = _address(value.get("address"), prefix)
    if address is None:
        raise ReportError("report_bad_address")
    raw_roles = value.get("roles")
    roles = sorted({r for r in raw_roles if r in ROLES}) if isinstance(raw_roles, list) else []
    state = value.get("state")
    rank = value.get("rank")
    raw_channels = value.get("channels")
    channels: list[str] = []
    cut = 0
    if isinstance(raw_channels, list):
        for item in raw_channels:
            peer = _address(item, prefix)
            if peer is None or peer == address or peer in channels:
                continue
            if len(channels) >= limits.max_channels:
                cut += 1
                continue
            channels.append(peer)
    return NodeReport(
        address=address, name=_text(value.get("name"), MAX_NAME), roles=roles,
        state=state if state in STATES else None,
        rank=rank if isinstance(rank, int) and not isinstance(rank, bool)
        and 0 <= rank <= 0xFFFF else None,
        parent=_address(value.get("parent"), prefix), channels=sorted(channels)), cut


@dataclass
class _Entry:
    hops: int
    report: NodeReport | None = None
    error: str | None = None
    asked_at: float | None = None


class MapGatherer:
    """Breadth-first gathering of node reports, from `origin` (this node's own report)."""

    def __init__(self, origin: NodeReport, *, prefix: ipaddress.IPv6Network | None,
                 seeds: Iterable[str] = (), limits: Limits = Limits()) -> None:
        self.limits = limits
        self.prefix = prefix
        self.origin = origin.address
        self.counters: Counter[str] = Counter()
        self.entries: dict[str, _Entry] = {origin.address: _Entry(0, origin)}
        self._queue: deque[str] = deque()
        self._pending: dict[str, float] = {}   # address -> when its ask is overdue
        self._started: float | None = None
        self._ended: float | None = None
        self._complete = True
        self._learn(origin, 0)
        for seed in seeds:
            addr = _address(seed, prefix)
            if addr is not None:
                self._add(addr, 1)

    # -- inputs ----------------------------------------------------------------------------
    def start(self, now: float) -> list[Output]:
        self._started = now
        return self._pump(now)

    def answered(self, address: str, value: Any, now: float) -> list[Output]:
        """`address` answered the synchronization with `value` (the objective's value)."""
        if self._pending.pop(address, None) is None:
            self.counters["late_answers"] += 1
            return self._pump(now)
        entry = self.entries[address]
        try:
            report, cut = parse_report(value, prefix=self.prefix, limits=self.limits)
        except ReportError as exc:
            self.counters[str(exc)] += 1
            entry.error = str(exc).replace("_", " ")
            return self._pump(now)
        if report.address != address:
            # a node speaks for itself only: keep what it says, under the address asked
            self.counters["report_address_mismatch"] += 1
            report.address = address
            report.channels = [p for p in report.channels if p != address]
        if cut:
            self.counters["channels_cut"] += cut
            self._complete = False
        entry.report = report
        self.counters["reports"] += 1
        self._learn(report, entry.hops)
        return self._pump(now)

    def failed(self, address: str, reason: str, now: float) -> list[Output]:
        """The synchronization with `address` failed (no route, refused, timed out...)."""
        if self._pending.pop(address, None) is not None:
            self.entries[address].error = reason[:64]
            self.counters["asks_failed"] += 1
        return self._pump(now)

    def next_timer(self) -> float | None:
        if self._ended is not None or self._started is None:
            return None
        due = [self._started + self.limits.deadline, *self._pending.values()]
        return min(due)

    def handle_timer(self, now: float) -> list[Output]:
        if self._ended is not None or self._started is None:
            return []
        if now >= self._started + self.limits.deadline:
            for address in list(self._pending) + list(self._queue):
                self.entries[address].error = "deadline"
                self.counters["deadline_gave_up"] += 1
            self._pending.clear()
            self._queue.clear()
            self._complete = False
            return self._pump(now)
        for address, due in list(self._pending.items()):
            if now >= due:
                del self._pending[address]
                self.entries[address].error = "timeout"
                self.counters["asks_timed_out"] += 1
        return self._pump(now)

    # -- state -----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._ended is not None

    def _add(self, address: str, hops: int) -> None:
        if address in self.entries:
            return
        if len(self.entries) >= self.limits.max_nodes:
            self.counters["nodes_over_limit"] += 1
            self._complete = False
            return
        self.entries[address] = _Entry(hops)
        self._queue.append(address)

    def _learn(self, report: NodeReport, hops: int) -> None:
        for peer in report.channels:
            self._add(peer, hops + 1)
        if report.parent is not None:
            self._add(report.parent, hops + 1)

    def _pump(self, now: float) -> list[Output]:
        if self._ended is not None:
            return []
        out: list[Output] = []
        while self._queue and len(self._pending) < self.limits.max_parallel:
            address = self._queue.popleft()
            started = now if self._started is None else self._started
            timeout = max(0.0, min(self.limits.ask_timeout,
                                   started + self.limits.deadline - now))
            self._pending[address] = now + timeout
            self.entries[address].asked_at = now
            self.counters["asks"] += 1
            out.append(Ask(address, timeout))
        if not self._queue and not self._pending:
            self._ended = now
            complete = self._complete and all(
                e.report is not None for e in self.entries.values())
            self._complete = complete
            out.append(Finished(complete))
        return out

    # -- the map ---------------------------------------------------------------------------
    def _duration(self, now: float) -> float:
        start = now if self._started is None else self._started
        end = now if self._ended is None else self._ended
        return round(end - start, 2)

    def result(self, now: float) -> dict[str, Any]:
        """The map (control.api.MapAnswer), as far as it got by `now`."""
        return build_map(self.origin, {a: (e.hops, e.report, e.error)
                                       for a, e in self.entries.items()},
                         complete=self._complete and self._ended is not None,
                         duration_s=self._duration(now),
                         counters=dict(self.counters), limits=self.limits)


def build_map(origin: str,
              entries: Mapping[str, tuple[int, NodeReport | None, str | None]], *,
              complete: bool, duration_s: float, counters: Mapping[str, int],
              limits: Limits) -> dict[str, Any]:
    """Nodes, secure channels (each pair once; `confirmed` when both ends report it) and RPL
    parent edges, sorted for a stable picture."""
    nodes = []
    said: dict[frozenset[str], set[str]] = {}
    parents = []
    for address in sorted(entries, key=lambda a: (entries[a][0], ipaddress.IPv6Address(a))):
        hops, report, error = entries[address]
        nodes.append({
            "address": address, "name": report.name if report else None,
            "roles": list(report.roles) if report else [],
            "state": report.state if report else None,
            "rank": report.rank if report else None,
            "parent": report.parent if report else None,
            "channels": len(report.channels) if report else None,
            "hops": hops, "reached": report is not None, "error": error,
            "origin": address == origin})
        if report is None:
            continue
        for peer in report.channels:
            if peer not in entries:  # over max_nodes: counted, not drawn
                continue
            said.setdefault(frozenset((address, peer)), set()).add(address)
        if report.parent is not None and report.parent in entries:
            parents.append({"child": address, "parent": report.parent})
    channels = []
    for pair, sayers in said.items():
        a, b = sorted(pair, key=ipaddress.IPv6Address)
        channels.append({"a": a, "b": b, "confirmed": len(sayers) == 2})
    channels.sort(key=lambda c: (ipaddress.IPv6Address(c["a"]), ipaddress.IPv6Address(c["b"])))
    return {"origin": origin, "complete": complete, "duration_s": duration_s,
            "nodes": nodes, "channels": channels, "parents": parents,
            "counters": dict(sorted(counters.items())),
            "limits": {"max_nodes": limits.max_nodes, "max_channels": limits.max_channels,
                       "max_report_bytes": limits.max_report_bytes,
                       "ask_timeout_s": limits.ask_timeout, "deadline_s": limits.deadline}}

"""GRASP engine scenarios with simulated nodes wired in memory (A–B–C), time passed in."""
from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import (
    CloseStream,
    Discovered,
    DiscoveryHeard,
    FloodReceived,
    NegotiationEnded,
    NegotiationRequested,
    NegotiationStep,
    OpenStream,
    SendMulticast,
    SendStream,
    SynchronizationDone,
)
from acp_openwrt.grasp.codec import decode, encode
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.errors import GraspApiError, GraspError
from acp_openwrt.grasp.messages import (
    Discovery,
    Flood,
    Locator,
    Objective,
    RequestNegotiation,
    TaggedObjective,
)


def addr(node: int, host: int = 1, ll: bool = False) -> bytes:
    prefix = (bytes.fromhex("fe800000000000000000000000") if ll
              else bytes.fromhex("fd00000000000000000000000000"))
    return prefix + bytes([node]) * (16 - len(prefix) - 1) + bytes([host])


class Net:
    """Nodes on point-to-point links; delivers every output in the order it was caused.

    Engine calls return their outputs (docs/core-contract.md): hand them to ``feed(node,
    result)``, which queues them and gives back the call's handle or session id if it
    returned one; ``pump`` delivers the queue, feeding what each delivery returns."""

    def __init__(self, names: list[str], links: list[tuple[str, str]], dull: bool = False) -> None:
        self.nodes: dict[str, Engine] = {}
        self.events: dict[str, list[Any]] = {n: [] for n in names}
        self.wire: dict[tuple[str, str], tuple[str, str]] = {}
        self.conns: dict[tuple[str, int], tuple[str, int]] = {}
        for i, name in enumerate(names, start=1):
            cfg = EngineConfig(dull=dull, address=addr(i))
            self.nodes[name] = Engine(cfg, random.Random(i))
        for a, b in links:
            ia, ib = f"{a}-{b}", f"{b}-{a}"
            self.nodes[a].add_interface(ia, self.ll(a, ia))
            self.nodes[b].add_interface(ib, self.ll(b, ib))
            self.wire[(a, ia)] = (b, ib)
            self.wire[(b, ib)] = (a, ia)
        self.sent_multicast: list[tuple[str, str, bytes]] = []
        self.queue: deque[tuple[str, Any]] = deque()

    def feed(self, name: str, result: Any) -> Any:
        """Queue what an engine call of node ``name`` returned: a list of outputs, or
        (handle, outputs); returns the handle (None for a plain list)."""
        value, outputs = result if isinstance(result, tuple) else (None, result)
        self.queue.extend((name, item) for item in outputs)
        return value

    def ll(self, node: str, ifname: str) -> bytes:
        return addr(sorted(self.events).index(node) + 1, ord(ifname[-1]), ll=True)

    def _find(self, address: bytes) -> tuple[str, str | None]:
        for name, engine in self.nodes.items():
            if engine.config.address == address:
                return name, None
            for ifname, ll in engine.interfaces.items():
                if ll == address:
                    return name, ifname
        raise AssertionError(f"no node has {address.hex()}")

    def pump(self, now: float) -> None:
        while self.queue:
            name, item = self.queue.popleft()
            self._deliver(name, item, now)

    def _deliver(self, name: str, item: Any, now: float) -> None:
        engine = self.nodes[name]
        if isinstance(item, SendMulticast):
            self.sent_multicast.append((name, item.ifname, item.data))
            peer, pif = self.wire[(name, item.ifname)]
            self.feed(peer, self.nodes[peer].receive_datagram(
                pif, engine.interfaces[item.ifname], item.data, now))
        elif isinstance(item, OpenStream):
            peer, pif = self._find(item.address)
            src = engine.interfaces[item.ifname] if item.ifname else engine.config.address
            their = self.feed(peer, self.nodes[peer].stream_accepted(src, pif, now))
            self.conns[(name, item.conn_id)] = (peer, their)
            self.conns[(peer, their)] = (name, item.conn_id)
        elif isinstance(item, SendStream):
            peer, their = self.conns[(name, item.conn_id)]
            self.feed(peer, self.nodes[peer].receive_stream_message(their, item.data, now))
        elif isinstance(item, CloseStream):
            other = self.conns.pop((name, item.conn_id), None)
            if other is not None:
                self.conns.pop(other, None)
                self.feed(other[0], self.nodes[other[0]].stream_closed(other[1], now))
        else:
            self.events[name].append(item)

    def tick(self, now: float) -> None:
        for name, engine in self.nodes.items():
            self.feed(name, engine.handle_timer(now))
        self.pump(now)


def line(dull: bool = False) -> Net:
    return Net(["A", "B", "C"], [("A", "B"), ("B", "C")], dull=dull)


EX1 = Objective("EX1", c.F_SYNCH, 2, ["value", 1])


def test_flood_loop_count_2_reaches_c_cached_with_ttl_then_expires() -> None:
    net = line()
    sid = net.feed("A", net.nodes["A"].flood([TaggedObjective(EX1)], 10000, now=0.0))
    net.pump(0.0)
    for name in "BC":
        entries = net.nodes[name].get_flood("EX1", 0.0)
        assert len(entries) == 1 and entries[0].expires == pytest.approx(10.0)
        assert entries[0].initiator == addr(1)
    assert net.nodes["C"].get_flood("EX1", 0.0)[0].objective.loop_count == 1  # decremented by B
    relayed = [decode(d) for n, _, d in net.sent_multicast if n == "B"]
    assert len(relayed) == 1 and relayed[0].session_id == sid  # same id, only towards C
    assert [e.objective.name for e in net.events["C"] if isinstance(e, FloodReceived)] == ["EX1"]
    assert not any(n == "C" for n, _, _ in net.sent_multicast)  # C never sends it back
    net.tick(9.9)
    assert net.nodes["C"].get_flood("EX1", 9.9)
    net.tick(10.0)
    assert net.nodes["C"].get_flood("EX1", 10.0) == [] and len(net.nodes["C"].flood_cache) == 0


def test_flood_loop_count_1_stops_at_b() -> None:
    net = line()
    net.feed("A", net.nodes["A"].flood([TaggedObjective(EX1.with_loop_count(1))], 5000, now=0.0))
    net.pump(0.0)
    assert net.nodes["B"].get_flood("EX1", 0.0)
    assert net.nodes["C"].get_flood("EX1", 0.0) == []
    assert [n for n, _, _ in net.sent_multicast] == ["A"]


def test_duplicate_floods_suppressed_and_same_name_same_tag_overwrites() -> None:
    net = line()
    b = net.nodes["B"]
    flood = Flood(7, addr(1), 1000, (TaggedObjective(EX1),))
    out = b.receive_datagram("B-A", net.ll("A", "A-B"), encode(flood), 0.0)
    assert b.receive_datagram("B-A", net.ll("A", "A-B"), encode(flood), 0.1) == []
    assert b.counters["duplicate_flood"] == 1 and b.counters["flood_accepted"] == 1
    assert sum(1 for o in out if isinstance(o, SendMulticast)) == 1
    newer = Flood(8, addr(1), 1000, (TaggedObjective(EX1.with_value("new")),))
    b.receive_datagram("B-A", net.ll("A", "A-B"), encode(newer), 0.2)
    loc = Locator(c.O_IPv6_LOCATOR, addr(1), c.IPPROTO_TCP, 80)
    tagged = Flood(9, addr(1), 1000, (TaggedObjective(EX1, loc),))
    b.receive_datagram("B-A", net.ll("A", "A-B"), encode(tagged), 0.3)
    entries = {e.locator: e.objective.value for e in b.get_flood("EX1", 0.3)}
    assert entries == {None: "new", loc: ["value", 1]}


def test_own_flood_coming_back_is_not_relayed_again() -> None:
    net = Net(["A", "B", "C"], [("A", "B"), ("B", "C"), ("C", "A")])
    a = net.nodes["A"]
    sid = net.feed("A", a.flood([TaggedObjective(EX1.with_loop_count(6))], 1000, now=0.0))
    net.pump(0.0)
    # A on both links, B and C each relay once towards the other, then suppress the copy
    assert [n for n, _, _ in net.sent_multicast] == ["A", "A", "B", "C"]
    duplicates = [net.nodes[n].counters["duplicate_flood"] for n in "BC"]
    assert duplicates == [1, 1]
    echo = Flood(sid, addr(1), 1000, (TaggedObjective(EX1.with_loop_count(4)),))
    assert not a.receive_datagram("A-B", net.ll("B", "B-A"), encode(echo), 0.1)
    assert a.counters["own_flood"] == 1


def test_discovery_two_hops_away_through_relaying() -> None:
    net = line()
    c_loc = Locator(c.O_IPv6_LOCATOR, addr(3), c.IPPROTO_TCP, 8000)
    ex2 = Objective("EX2", c.F_DISC | c.F_NEG, 6)
    net.nodes["C"].register_objective(ex2, [c_loc], ttl_ms=30000)
    handle = net.feed("A", net.nodes["A"].discover(ex2, now=0.0, timeout_ms=500))
    net.pump(0.0)
    relayed = [decode(d) for n, _, d in net.sent_multicast if n == "B"]
    assert isinstance(relayed[0], Discovery) and relayed[0].initiator == addr(1)
    assert relayed[0].objective.loop_count == 5
    net.tick(0.5)
    discovered = [e for e in net.events["A"] if isinstance(e, Discovered)]
    assert discovered == [Discovered(handle, "EX2", (c_loc,))]
    # B cached the answer and now answers a new discovery from A itself with a divert… but not
    # on the interface it learned it from; C's side would get it
    assert net.nodes["B"].discovery.cached("EX2", 1.0) == [c_loc]
    again = net.feed("A", net.nodes["A"].discover(ex2, now=1.0, timeout_ms=0))
    net.pump(1.0)
    assert Discovered(again, "EX2", (c_loc,)) in net.events["A"]


def test_a_discovery_for_the_first_answer_ends_with_it() -> None:
    """first=True: the Discovered event comes with the first response, not at the deadline
    (the join proxy needs one registrar now); the deadline still ends one that gets none."""
    net = line()
    c_loc = Locator(c.O_IPv6_LOCATOR, addr(3), c.IPPROTO_TCP, 8000)
    ex2 = Objective("EX2", c.F_DISC | c.F_NEG, 6)
    net.nodes["C"].register_objective(ex2, [c_loc], ttl_ms=30000)
    a = net.nodes["A"]
    handle = net.feed("A", a.discover(ex2, now=0.0, timeout_ms=5000, first=True))
    net.pump(0.0)
    assert [e for e in net.events["A"] if isinstance(e, Discovered)] == [
        Discovered(handle, "EX2", (c_loc,))]
    assert a.next_timer() is None or a.next_timer() > 5.0  # nothing pending for it any more
    lonely = Objective("EX4", c.F_DISC | c.F_NEG, 6)
    none = net.feed("A", a.discover(lonely, now=1.0, timeout_ms=500, first=True))
    net.pump(1.0)
    net.tick(1.5)
    assert Discovered(none, "EX4", ()) in net.events["A"]


def _negotiation(net: Net) -> tuple[int, int]:
    c_node, a_node = net.nodes["C"], net.nodes["A"]
    ex3 = Objective("EX3", c.F_NEG, 6, ["NZD", 410])
    c_node.listen_negotiate(ex3)
    peer = Locator(c.O_IPv6_LOCATOR, addr(3), c.IPPROTO_TCP, c.GRASP_LISTEN_PORT)
    a_handle = net.feed("A", a_node.request_negotiate(ex3, peer, now=0.0))
    net.pump(0.0)
    (req,) = [e for e in net.events["C"] if isinstance(e, NegotiationRequested)]
    assert req.objective.value == ["NZD", 410] and req.peer == addr(1)
    return a_handle, req.handle


def test_negotiation_one_step_then_end() -> None:
    net = line()
    a_handle, c_handle = _negotiation(net)
    net.feed("C", net.nodes["C"].negotiate_step(c_handle, Objective("EX3", c.F_NEG, 6, ["NZD", 80]),
                                                0.1))
    net.pump(0.1)
    (step,) = [e for e in net.events["A"] if isinstance(e, NegotiationStep)]
    assert step.handle == a_handle and step.objective.value == ["NZD", 80]
    assert step.objective.loop_count == 5  # Appendix A.5: decremented on receipt
    net.feed("A", net.nodes["A"].end_negotiate(a_handle, True, 0.2))
    net.pump(0.2)
    (end,) = [e for e in net.events["C"] if isinstance(e, NegotiationEnded)]
    assert end.handle == c_handle and end.accept and end.error == GraspError.ok
    assert not net.conns  # both sides closed their connections
    with pytest.raises(GraspApiError):
        net.nodes["A"].negotiate_step(a_handle, step.objective, 0.3)


def test_step_with_the_loop_count_exhausted_ends_the_session_and_says_so() -> None:
    net = line()
    ex3 = Objective("EX3", c.F_NEG, 1, 1)  # loop count 1: C's step arrives at A with 0 left
    net.nodes["C"].listen_negotiate(ex3)
    peer = Locator(c.O_IPv6_LOCATOR, addr(3), c.IPPROTO_TCP, c.GRASP_LISTEN_PORT)
    a_handle = net.feed("A", net.nodes["A"].request_negotiate(ex3, peer, now=0.0))
    net.pump(0.0)
    (req,) = [e for e in net.events["C"] if isinstance(e, NegotiationRequested)]
    net.feed("C", net.nodes["C"].negotiate_step(req.handle, ex3.with_value(2), 0.1))
    net.pump(0.1)
    (step,) = [e for e in net.events["A"] if isinstance(e, NegotiationStep)]
    with pytest.raises(GraspApiError) as err:
        net.nodes["A"].negotiate_step(a_handle, step.objective, 0.2)
    assert err.value.code == GraspError.loopExhausted
    kinds = [type(o) for o in err.value.outputs]  # what the refused call did, for the edge
    assert kinds == [CloseStream, NegotiationEnded]
    net.feed("A", err.value.outputs)
    net.pump(0.2)
    assert not net.conns


def test_negotiation_wait_decline_and_timeout() -> None:
    net = line()
    a_handle, c_handle = _negotiation(net)
    net.feed("C", net.nodes["C"].negotiate_wait(c_handle, 90000, 1.0))
    net.pump(1.0)
    net.tick(70.0)  # beyond the default 60 s, but inside the wait
    assert not [e for e in net.events["A"] if isinstance(e, NegotiationEnded)]
    net.feed("C", net.nodes["C"].end_negotiate(c_handle, False, 80.0, reason="Insufficient funds"))
    net.pump(80.0)
    (end,) = [e for e in net.events["A"] if isinstance(e, NegotiationEnded)]
    assert (end.accept, end.reason, end.error) == (False, "Insufficient funds", GraspError.declined)
    net2 = line()
    a2, _ = _negotiation(net2)
    net2.tick(61.0)
    (fail,) = [e for e in net2.events["A"] if isinstance(e, NegotiationEnded)]
    assert fail.handle == a2 and fail.error == GraspError.noNegReply


def test_request_for_objective_nobody_listens_on_closes_at_once() -> None:
    net = line()
    peer = Locator(c.O_IPv6_LOCATOR, addr(3), c.IPPROTO_TCP, c.GRASP_LISTEN_PORT)
    handle = net.feed("A", net.nodes["A"].request_negotiate(Objective("EX9", c.F_NEG, 6, 1), peer,
                                                            now=0.0))
    net.pump(0.0)
    (end,) = [e for e in net.events["A"] if isinstance(e, NegotiationEnded)]
    assert end.handle == handle and end.error == GraspError.noNegReply
    assert net.nodes["C"].counters["no_listener"] == 1


def test_synchronization_and_from_flood_cache() -> None:
    net = line()
    value = Objective("EX2", c.F_SYNCH, 5, ["Example 2 value=", 200])
    net.nodes["C"].listen_synchronize(value)
    peer = Locator(c.O_IPv6_LOCATOR, addr(3), c.IPPROTO_TCP, c.GRASP_LISTEN_PORT)
    handle = net.feed("A", net.nodes["A"].synchronize(Objective("EX2", c.F_SYNCH, 5, 0), peer,
                                                      now=0.0))
    net.pump(0.0)
    assert SynchronizationDone(handle, value, GraspError.ok) in net.events["A"]
    net.feed("C", net.nodes["C"].flood([TaggedObjective(value)], 0, now=1.0))  # ttl 0: no expiry
    net.pump(1.0)
    cached = net.feed("A", net.nodes["A"].synchronize(Objective("EX2", c.F_SYNCH, 5), None,
                                                      now=1e6))
    net.pump(1e6)
    (done,) = [e for e in net.events["A"]
               if isinstance(e, SynchronizationDone) and e.handle == cached]
    assert done.objective.value == value.value and done.error == GraspError.ok


def dull_pair() -> tuple[Engine, Engine, Net]:
    net = Net(["A", "B"], [("A", "B")], dull=True)
    return net.nodes["A"], net.nodes["B"], net


def test_dull_flood_fills_link_local_and_is_received() -> None:
    a, b, net = dull_pair()
    an_acp = Objective("AN_ACP", c.F_SYNCH, 6, "IKEv2")
    loc = Locator(c.O_IPv6_LOCATOR, bytes(16), c.IPPROTO_UDP, 500)
    net.feed("A", a.flood([TaggedObjective(an_acp, loc)], 210000, now=0.0))
    net.pump(0.0)
    (entry,) = b.get_flood("AN_ACP", 0.0)
    ll = net.ll("A", "A-B")
    assert entry.initiator == ll and entry.locator.address == ll and entry.objective.loop_count == 1


def test_dull_drops() -> None:
    a, b, net = dull_pair()
    ll = net.ll("A", "A-B")
    ok = Flood(1, ll, 1000, (TaggedObjective(Objective("AN_ACP", 4, 1, "IKEv2")),))
    b.receive_datagram("B-A", addr(1), encode(ok), 0.0)  # global source
    b.receive_datagram("B-A", ll, encode(ok._replace(session_id=2, objectives=(
        TaggedObjective(Objective("AN_ACP", 4, 2, "IKEv2")),))), 0.0)
    b.receive_datagram("B-A", ll, encode(Discovery(3, ll, Objective("AN_ACP", 5, 2))), 0.0)
    b.receive_datagram("B-A", ll, encode(RequestNegotiation(4, Objective("X", 2, 1, 0))), 0.0)
    assert b.counters == {"dull_not_link_local": 1, "dull_loop_count": 2, "dull_not_flood": 1}
    assert b.get_flood("AN_ACP", 0.0) == []
    out = b.receive_datagram("B-A", ll, encode(ok), 0.0)
    assert b.get_flood("AN_ACP", 0.0) and b.counters["flood_accepted"] == 1
    assert not [o for o in out if isinstance(o, SendMulticast)]  # never relays
    with pytest.raises(GraspApiError):
        b.discover(Objective("AN_ACP", 5, 1), 0.0)


def test_rate_limit_throttles_hostile_neighbour_but_not_a_good_one() -> None:
    cfg = EngineConfig(address=addr(2), neighbour_rate=100.0, neighbour_burst=100.0)
    b = Engine(cfg, random.Random(1))
    b.add_interface("eth0", addr(2, ll=True))
    hostile, good = addr(7, ll=True), addr(8, ll=True)
    rng = random.Random(5)
    good_sent = 0
    outputs: list[Any] = []
    for i in range(10000):  # one second: 10,000 messages from the hostile one, 50 from the good
        now = i / 10000
        data = encode(Flood(i, hostile, 1000, (TaggedObjective(EX1.with_loop_count(1)),))) \
            if i % 2 else rng.randbytes(rng.randrange(1, 40))
        outputs += b.receive_datagram("eth0", hostile, data, now)
        if i % 200 == 0:
            flood = Flood(100000 + i, good, 1000, (TaggedObjective(Objective("GOOD", 4, 1, i)),))
            outputs += b.receive_datagram("eth0", good, encode(flood), now)
            good_sent += 1
    accepted_good = len({e.objective.value for e in outputs
                         if isinstance(e, FloodReceived) and e.objective.name == "GOOD"})
    assert accepted_good == good_sent == 50
    # the hostile peer got at most its burst plus one second of rate through the decoder
    decoded = b.counters.get("decode_error", 0) + b.counters.get("flood_accepted", 0) - good_sent
    assert decoded <= 100 + 100 + 1
    assert b.counters["rate_limited"] >= 9700


def test_garbage_from_a_peer_never_raises() -> None:
    net = line()
    b = net.nodes["B"]
    rng = random.Random(3)
    conn, _ = b.stream_accepted(addr(1), None, 0.0)
    for i in range(3000):
        junk = rng.randbytes(rng.randrange(0, 80))
        b.receive_datagram("B-A", net.ll("A", "A-B"), junk, i * 0.01)
        b.receive_stream_message(conn, junk, i * 0.01)
    assert b.counters["decode_error"] > 0


def test_dull_solicit_is_heard_as_an_event_never_answered_by_unicast() -> None:
    """A pledge's M_DISCOVERY in DULL (RFC 8990 §2.5.2: link-local multicast, loop count 1):
    the neighbour's engine hands it up as DiscoveryHeard and sends nothing itself."""
    a, b, net = dull_pair()
    asked = Objective("AN_Proxy", c.F_DISC | c.F_SYNCH, 6)
    sid, out = a.solicit(asked, 0.0)
    (sent,) = out
    assert isinstance(sent, SendMulticast) and sent.ifname == "A-B"
    ll = net.ll("A", "A-B")
    heard = b.receive_datagram("B-A", ll, sent.data, 0.0)
    assert heard == [DiscoveryHeard("B-A", ll, asked._replace(loop_count=1))]
    assert b.counters["dull_discovery_heard"] == 1 and a.counters["dull_solicited"] == 1
    # our own, looped back: not an event
    assert a.receive_datagram("A-B", ll, sent.data, 0.0) == []
    assert a.counters["own_discovery"] == 1
    with pytest.raises(GraspApiError):
        a.solicit(asked, 0.0, ifname="nope")
    acp = Engine(EngineConfig(address=addr(9)))
    with pytest.raises(GraspApiError):
        acp.solicit(asked, 0.0)

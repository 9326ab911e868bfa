"""RPL engines wired together in memory: a dict of point-to-point links, simulated time.

Every Send is encoded with the codec, delivered to the peer's receive() after a small latency, and
routes are checked by walking next hops through each node's routes() until the destination's ACP
address is reached (no loops, no black holes).
"""
from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
from collections.abc import Callable

import pytest

from acp_openwrt.identity.address import vlong_address, zone_address
from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl.actions import Send
from acp_openwrt.rpl.dodag import RplNode
from acp_openwrt.rpl.messages import Dao, DaoAck, Dio, encode_body
from acp_openwrt.rpl.profile import RplConfig
from acp_openwrt.rpl.routes import RouteKind, lookup

RSUB = "area51.research.acp.example"
Drop = Callable[[str, str, Send], bool]


def acp_address(i: int) -> ipaddress.IPv6Address:
    """Mixed schemes so /127, /120 and /112 targets all appear."""
    if i % 3 == 0:
        return vlong_address(RSUB, 7, i + 1, v_bits=8).address
    if i % 3 == 1:
        return zone_address(RSUB, 7, i + 1).address
    return vlong_address(RSUB, 7, i + 1, v_bits=16).address


class Net:
    def __init__(self, size: int, root: int = 0, seed: int = 1, latency: float = 0.002) -> None:
        self.nodes = {i: RplNode(RplConfig.for_address(acp_address(i), root=(i == root)),
                                 rng=random.Random(seed * 1000 + i)) for i in range(size)}
        self.links: dict[tuple[int, str], tuple[int, str]] = {}
        self.ll: dict[tuple[int, str], ipaddress.IPv6Address] = {}
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.now = 0.0
        self.latency = latency
        self.drop: Drop | None = None
        self.delivered: list[tuple[int, int, object]] = []

    @staticmethod
    def ifname(peer: int) -> str:
        return f"acp_{peer}"

    def link(self, a: int, b: int) -> None:
        for x, y in ((a, b), (b, a)):
            self.links[(x, self.ifname(y))] = (y, self.ifname(x))
            self.ll[(x, self.ifname(y))] = ipaddress.IPv6Address(f"fe80::{x + 1:x}:{y + 1:x}")
        for x, y in ((a, b), (b, a)):
            self.dispatch(x, self.nodes[x].interface_up(self.ifname(y), self.now))

    def cut(self, a: int, b: int) -> None:
        for x, y in ((a, b), (b, a)):
            del self.links[(x, self.ifname(y))]
        for x, y in ((a, b), (b, a)):
            self.dispatch(x, self.nodes[x].interface_down(self.ifname(y), self.now))

    def dispatch(self, sender: int, actions: list[Send]) -> None:
        for send in actions:
            key = (sender, send.ifname)
            if key not in self.links:
                continue
            if self.drop is not None and self.drop(str(sender), send.ifname, send):
                continue
            body = encode_body(send.message)
            src = self.ll[key]

            def deliver(key=key, send=send, body=body, src=src) -> None:
                if key not in self.links:
                    return  # the link went away while the packet was in flight
                peer, pif = self.links[key]
                if not send.dst.is_multicast and send.dst != self.ll[(peer, pif)]:
                    return
                self.delivered.append((key[0], peer, send.message))
                self.dispatch(peer, self.nodes[peer].receive(pif, src, send.message.code, body,
                                                             self.now, send.dst))

            heapq.heappush(self.queue, (self.now + self.latency, next(self._order), deliver))

    def run(self, duration: float) -> None:
        end = self.now + duration
        while True:
            timers = [(t, i) for i, n in self.nodes.items() if (t := n.next_timer()) is not None]
            next_timer = min(timers, default=(float("inf"), -1))
            next_packet = self.queue[0][0] if self.queue else float("inf")
            when = min(next_timer[0], next_packet)
            if when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            if next_packet <= next_timer[0]:
                heapq.heappop(self.queue)[2]()
            else:
                node = next_timer[1]
                self.dispatch(node, self.nodes[node].handle_timer(self.now))

    def path(self, src: int, dst: int) -> list[int]:
        """Next hops from src to dst's ACP address; AssertionError on a hole or a loop."""
        target = self.nodes[dst].config.address
        at, hops = src, [src]
        for _ in range(64):
            if self.nodes[at].config.address == target:
                return hops
            route = lookup(self.nodes[at].routes(), target)
            assert route is not None, f"{at} has no route to {dst} ({hops})"
            assert route.kind is RouteKind.UNICAST, f"{at} black-holes {dst} ({hops})"
            peer, pif = self.links.get((at, route.ifname), (None, None))
            assert peer is not None and self.ll[(peer, pif)] == route.gateway, \
                f"{at} routes {dst} via a dead next hop {route.gateway}%{route.ifname}"
            at = peer
            assert at not in hops, f"loop {hops + [at]} towards {dst}"
            hops.append(at)
        raise AssertionError(f"no delivery after 64 hops: {hops}")

    def all_pairs(self) -> int:
        """Check all pairs; return the longest path in hops."""
        longest = 0
        for a in self.nodes:
            for b in self.nodes:
                longest = max(longest, len(self.path(a, b)) - 1)
        return longest

    def reachable(self) -> bool:
        try:
            self.all_pairs()
        except AssertionError:
            return False
        return True

    def converge(self, limit: float, step: float = 0.05) -> float:
        """Run until all pairs reach each other; the simulated time it took."""
        start = self.now
        while self.now - start < limit:
            self.run(step)
            if self.reachable():
                return self.now - start
        self.all_pairs()  # raises with the reason
        raise AssertionError("unreachable")  # pragma: no cover


def mesh10() -> list[tuple[int, int]]:
    ring = [(i, (i + 1) % 10) for i in range(10)]
    return ring + [(0, 5), (2, 7), (3, 8), (1, 4), (6, 9)]


def build(size: int, edges: list[tuple[int, int]], seed: int = 1) -> Net:
    net = Net(size, seed=seed)
    for a, b in edges:
        net.link(a, b)
    return net


def test_root_and_chain_of_five_reach_each_other():
    net = build(6, [(i, i + 1) for i in range(5)])
    took = net.converge(10.0)
    assert took < 3.0
    assert net.all_pairs() == 5
    assert net.nodes[0].role == "root"
    ranks = [net.nodes[i].rank for i in range(6)]
    assert ranks == [256 + 768 * i for i in range(6)]  # OF0 with rank factor 1, step 3
    for i in range(1, 6):
        status = net.nodes[i].status()
        assert status["role"] == "member" and status["dodag_id"] == str(net.nodes[0].config.address)
        assert status["parents"][0]["ifname"] == f"acp_{i - 1}"
    root_targets = {r.prefix for r in net.nodes[0].routes() if r.kind is RouteKind.UNICAST}
    assert root_targets == {net.nodes[i].config.prefix for i in range(1, 6)}
    lengths = {net.nodes[i].config.prefix.prefixlen for i in range(6)}
    assert lengths == {112, 120, 127}


def test_mesh_of_ten_with_loops():
    net = build(10, mesh10())
    took = net.converge(10.0)
    assert took < 3.0
    net.run(30.0)
    assert net.all_pairs() <= 6
    for i in range(1, 10):
        node = net.nodes[i]
        assert node.role == "member"
        assert 1 <= len(node.parents) <= c.MAX_PARENTS
        for parent in node.parents:  # loop avoidance: every parent ranks strictly lower
            peer = net.links[(i, parent[0])][0]
            assert net.nodes[peer].rank < node.rank


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mesh_heals_after_cutting_preferred_parent_links(seed):
    net = build(10, mesh10(), seed=seed)
    net.converge(10.0)
    net.run(20.0)
    victim = max(range(1, 10), key=lambda i: net.nodes[i].rank)
    while victim != 0:
        parent_if = net.nodes[victim].parents[0][0]
        parent = net.links[(victim, parent_if)][0]
        net.cut(victim, parent)
        took = net.converge(5.0, step=0.01)
        assert took < 3.0, f"healing took {took:.2f}s"
        victim = parent
        if len([k for k in net.links if k[0] == victim]) < 2:
            break
    net.run(60.0)  # and stays healthy: no count-to-infinity, no flapping into loops
    net.all_pairs()


def test_chain_cut_isolates_then_rejoins():
    net = build(6, [(i, i + 1) for i in range(5)])
    net.converge(10.0)
    net.cut(2, 3)
    net.run(0.5)
    # 3, 4, 5 have detached into a floating DODAG led by 3 and still reach each other.
    assert net.nodes[3].role == "floating-root"
    for a in (3, 4, 5):
        for b in (3, 4, 5):
            net.path(a, b)
    # The root side withdrew the cut-off targets (No-Path DAOs travelled up from 2).
    cut_off = {net.nodes[i].config.prefix for i in (3, 4, 5)}
    assert net.nodes[2].status()["children"] == []
    for i in (0, 1, 2):
        assert not cut_off & {r.prefix for r in net.nodes[i].routes()}
    for a in (0, 1, 2):
        for b in (0, 1, 2):
            net.path(a, b)
    net.link(2, 3)
    took = net.converge(5.0, step=0.01)
    assert took < 3.0
    assert all(net.nodes[i].role == "member" for i in range(1, 6))


def test_lost_dao_ack_is_retried():
    net = Net(2)
    lost = []

    def drop(sender: str, ifname: str, send: Send) -> bool:
        if isinstance(send.message, DaoAck) and not lost:
            lost.append(send)
            return True
        return False

    net.drop = drop
    net.link(0, 1)
    net.run(1.0)
    assert lost, "no DAO-ACK was sent"
    child = net.nodes[1]
    assert child.status()["counters"]["dao_retransmitted"] == 1
    daos = [m for s, _p, m in net.delivered if s == 1 and isinstance(m, Dao)]
    assert [m.sequence for m in daos] == [daos[0].sequence] * 2  # the same DAO, sent again
    acks = [m for s, _p, m in net.delivered if s == 0 and isinstance(m, DaoAck)]
    assert [a.sequence for a in acks] == [daos[0].sequence]  # the retry was acknowledged
    assert child.parents and net.reachable()


def test_dao_to_unresponsive_parent_gives_up_after_retries():
    net = Net(3)
    net.drop = lambda sender, ifname, send: sender == "0" and isinstance(send.message, DaoAck)
    net.link(0, 1)
    net.run(3.0)
    assert net.nodes[1].status()["counters"]["dao_retransmitted"] == c.DAO_RETRIES
    assert net.nodes[1].parents == []  # the parent failed validation
    assert net.nodes[1].role == "member" or net.nodes[1].role == "floating-root"
    net.run(c.ACP_DAO_FAILURE_PENALTY)
    assert net.nodes[1].status()["counters"]["dao_retransmitted"] == 2 * c.DAO_RETRIES


def test_hostile_dio_does_not_break_routing():
    net = build(4, [(0, 1), (1, 2), (2, 3), (3, 0)])
    net.converge(5.0)
    before = {i: n.routes() for i, n in net.nodes.items()}
    victim = net.nodes[2]
    ifname = "acp_1"
    src = net.ll[(1, "acp_2")]
    dodag = net.nodes[0].config.address
    hostile = [
        Dio(0, 240, 0, dodag),                     # rank 0 from a non-root: read as ROOT_RANK
        Dio(0, 240, 100, dodag),                   # below ROOT_RANK: likewise
        Dio(0, 240, 256, victim.config.address),   # claims to be the victim's own DODAG
        Dio(0, 240, c.INFINITE_RANK, dodag),       # infinite rank is never a parent
        Dio(5, 240, 256, dodag),                   # another instance
        Dio(0, 240, 256, dodag, mop=1),            # non-storing: not joined
    ]
    for dio in hostile:
        net.dispatch(2, victim.receive(ifname, src, dio.code, encode_body(dio), net.now))
    for garbage in (b"", b"\x00", b"\xff" * 30, bytes(range(40))):
        for code in (0, 1, 2, 3, 0x81, 7):
            net.dispatch(2, victim.receive(ifname, src, code, garbage, net.now))
    net.dispatch(2, victim.receive(ifname, "fd00::1", 1, encode_body(hostile[0]), net.now))
    assert victim.decode_errors > 0 and victim.dropped >= 2
    counters = victim.counters()
    assert counters["dio_rank_below_root"] == 2 and counters["dio_mop_unsupported"] == 1
    took = net.converge(5.0)
    assert took < 3.0
    net.run(30.0)
    net.all_pairs()
    assert victim.role == "member" and victim.rank > 256
    assert {i: n.routes() for i, n in net.nodes.items()} == before or net.reachable()


def test_unresponsive_parent_expires_by_dio_silence():
    net = build(3, [(0, 1), (1, 2), (0, 2)])
    net.converge(5.0)
    # 0 -> 1 stops: 1 no longer hears DIOs from 0 (a one-way failure without interface down).
    net.drop = lambda sender, ifname, send: sender == "0" and ifname == "acp_1"
    net.run(3 * 65.536 * 2 + 5)
    assert net.nodes[1].parents and net.links[(1, net.nodes[1].parents[0][0])][0] == 2


def random_mesh(size: int, extra: int, rng: random.Random) -> list[tuple[int, int]]:
    """A random spanning tree plus extra edges (so there are loops)."""
    edges = {(rng.randrange(i), i) for i in range(1, size)}
    while len(edges) < size - 1 + extra:
        a, b = rng.sample(range(size), 2)
        if (b, a) not in edges:
            edges.add((a, b))
    return sorted(edges)


def connected(size: int, edges: list[tuple[int, int]]) -> bool:
    seen, stack = {0}, [0]
    while stack:
        x = stack.pop()
        for a, b in edges:
            for y in ((b,) if a == x else (a,) if b == x else ()):
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
    return len(seen) == size


@pytest.mark.parametrize("seed", range(4))
def test_random_meshes_with_random_cuts_and_new_links(seed):
    rng = random.Random(seed)
    size = 15
    net = build(size, random_mesh(size, size // 2, rng), seed=seed)
    assert net.converge(10.0) < 3.0
    for _ in range(6):
        live = sorted((a, int(i[4:])) for a, i in net.links if a < int(i[4:]))
        cuttable = [e for e in live if connected(size, [x for x in live if x != e])]
        if rng.random() < 0.7 and cuttable:
            net.cut(*rng.choice(cuttable))
        else:
            a, b = rng.sample(range(size), 2)
            if (a, net.ifname(b)) not in net.links:
                net.link(a, b)
        assert net.converge(5.0, step=0.01) < 3.0
        net.run(rng.uniform(0.0, 5.0))
        net.all_pairs()  # and it stays converged

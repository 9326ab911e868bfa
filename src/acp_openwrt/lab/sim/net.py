"""An ACP of N nodes in one process, on the project's real sans-I/O cores.

Per node, the real cores (docs/core-contract.md), each on its own SimTimer:

- DULL: a GRASP engine in DULL mode (grasp/engine.py) per node, one interface per link, sending
  and hearing AN_ACP (discovery/an_acp.py) and AN_Proxy floods; the adjacency table
  (discovery/adjacency.py) fed with every AN_ACP heard. Floods at once when the node gets its
  LDevID, every 60 s +-10 % after, and at once on a link where a newcomer was heard (at most
  once a second), as discovery/part.py does.
- secure channels: a ChannelTable of PeerChannels (channels/peer_channel.py) per node; IKEv2
  is a delay model (``Model.ike_s`` per exchange, each of the 4 datagrams lost with the link's
  loss, charon's retransmission schedule 4 s x 1.8^k, 5 retries). The responder answers only if
  it has a connection loaded for the initiator (it initiated itself, or was verified once),
  else the attempt is refused (NO_PROPOSAL_CHOSEN) and the responder is knocked, as in charon.
- RPL: an RplNode (rpl/dodag.py, storing mode, the ACP profile) per enrolled node, one
  interface per channel; DIO, DIS, DAO, DAO-ACK delivered as message objects over the link.
- ACP GRASP: a full GRASP engine per enrolled node on its channel interfaces: the registrar
  floods AN_join_registrar (loop count 255) every 60 s; a node repeats its cached one on every
  channel that comes up, as grasp/part.py does; a node that has heard it is a join proxy.
- BRSKI: the pledge's ProxyBook (brski/pledge/proxies.py) chooses the join proxy from AN_Proxy
  floods heard, with its back-off; the enrolment itself is a delay model: round trips over the
  ACP path from the proxy to the registrar and the registrar's service time, one request at a
  time (a queue). After its LDevID a node takes ``Model.startup_s`` to run its ACP parts.

Links are point-to-point with a fixed one-way latency each and a loss rate applied to every
UDP-like datagram (DULL floods, RPL, IKE); ACP GRASP runs over TCP (no loss, latency only).
Everything random comes from one seeded RNG: the same seed gives the same run.
"""
from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...brski.pledge.client import Locator as ProxyLocator
from ...brski.pledge.proxies import ProxyBook, TryProxy
from ...channels.channel_table import Channel, ChannelTable
from ...channels.peer_channel import (
    Activate,
    Deactivate,
    Initiate,
    PeerChannel,
    Prepare,
    Release,
    Remove,
    Terminate,
    Verify,
)
from ...discovery.adjacency import AdjacencyTable, Limits
from ...discovery.an_acp import AN_ACP, Offer, our_flood, read_offer
from ...events import AdjacencyDown, AdjacencyUp
from ...grasp import constants as gc
from ...grasp.actions import FloodReceived, SendMulticast
from ...grasp.engine import Engine, EngineConfig
from ...grasp.messages import Locator, Objective, TaggedObjective
from ...rpl.actions import Send
from ...rpl.messages import Dao, DaoAck, Dio, Dis
from ...rpl.profile import RplConfig
from ...rpl.routes import RouteKind
from .kernel import Kernel, SimTimer
from .topology import Topology

AN_PROXY = "AN_Proxy"
AN_JOIN_REGISTRAR = "AN_join_registrar"
PROXY_PORT = 8443
REGISTRAR_PORT = 443
ACP_PREFIX = int(ipaddress.IPv6Address("fd89:b714:f3db::"))
DULL_TTL_MS = 210_000
PROXY_TTL_MS = 180_000
REGISTRAR_TTL_MS = 180_000
ASA_TTL_MS = 180_000
# grasp/service.py runs each engine's timer at least every second (its seen caches expire
# only then); here every 10 s, a tenth of the events, at most 10 s more of a 120 s lifetime.
HOUSEKEEPING_S = 10.0
IKE_RETRANSMITS = (4.0, 7.2, 12.96, 23.33, 42.0)  # charon's defaults: 4 s x 1.8^k, 5 retries


@dataclass(frozen=True)
class Model:
    """The delays the simulation does not run code for, and the protocol periods."""
    latency_min_s: float = 0.0002     # one-way latency of a link, drawn per link
    latency_max_s: float = 0.002
    loss: float = 0.0                 # per datagram, every link
    ike_s: float = 0.75               # one IKEv2 exchange pair with certificates (guest: 0.7-0.8)
    ike_jitter: float = 0.2
    enrol_rtts: int = 8               # TLS + voucher + enrol round trips pledge <-> registrar
    registrar_service_s: float = 0.083  # one enrolment's CPU at the registrar (bench brski_enrol)
    pledge_cpu_s: float = 0.05        # key pair, CSR, voucher checks on the pledge
    startup_s: float = 8.0            # LDevID -> ACP parts running with it (calibrated, line4)
    dull_interval_s: float = 60.0
    proxy_interval_s: float = 10.0
    registrar_flood_s: float = 60.0
    flood_jitter: float = 0.1
    asa_flood_s: float = 0.0          # >0: every node floods one objective this often (an ASA)
    # as grasp/part.py: 1, the new neighbour only; None keeps the cached loop count (what it did
    # before this simulation found the cost: a network-wide flood per new channel)
    repeat_loop_count: int | None = 1
    enrolled_at_start: bool = False   # every node has its LDevID at t=0 (no BRSKI)


def acp_address(index: int) -> ipaddress.IPv6Address:
    """Node index -> an ACP address (Zone scheme shape: /127 per node)."""
    return ipaddress.IPv6Address(ACP_PREFIX + ((index + 1) << 17))


def link_local(index: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(f"fe80::{index + 1:x}")


class SimNode:
    def __init__(self, net: SimNet, index: int, peers: list[int]) -> None:
        self.net = net
        self.index = index
        self.peers = peers
        kernel = net.kernel
        self.rng = kernel.child_rng()
        self.ll = link_local(index)
        self.ll_bytes = self.ll.packed
        self.ll_str = str(self.ll)
        self.address = acp_address(index)
        self.enrolled = False
        self.running = False          # ACP parts up (LDevID + startup)
        self.enrolled_at: float | None = None
        self.knows_registrar = index == 0
        self.proxying = False
        # DULL: everyone listens, also a pledge
        self.dull = Engine(EngineConfig(dull=True), rng=self.rng)
        for p in peers:
            self.dull.add_interface(f"d{p}", self.ll_bytes)
        self.dull_timer = SimTimer(kernel, self.dull, self._dull_out, ceiling=HOUSEKEEPING_S)
        self.table = AdjacencyTable(Limits.for_interval(net.model.dull_interval_s))
        self.table_timer = SimTimer(kernel, self.table, self._table_out)
        self._answered: dict[str, float] = {}
        # pledge
        self.book = ProxyBook()
        self.book_timer = SimTimer(kernel, self.book, self._book_out)
        # created when the ACP parts start
        self.channels = ChannelTable()
        self.channel_timer = SimTimer(kernel, self.channels, self._channel_due)
        self.prepared: set[int] = set()
        self.rpl: Any = None
        self.rpl_timer: SimTimer | None = None
        self.acp: Engine | None = None
        self.acp_timer: SimTimer | None = None

    # ------------------------------------------------------------------ life cycle
    def got_ldevid(self, now: float) -> None:
        self.enrolled, self.enrolled_at = True, now
        self.net.kernel.after(0.0 if self.index == 0 or self.net.model.enrolled_at_start
                              else self.net.model.startup_s, self.start_acp)

    def start_acp(self) -> None:
        net, now = self.net, self.net.kernel.now
        self.running = True
        root = self.index == 0
        config = RplConfig(self.address, ipaddress.IPv6Network((self.address, 127)), root=root,
                           preference=4 if root else 1)
        from ...rpl.dodag import RplNode
        self.rpl = RplNode(config, rng=self.rng)
        self.rpl_timer = SimTimer(net.kernel, self.rpl, self._rpl_out)
        self.acp = Engine(EngineConfig(address=self.address.packed), rng=self.rng)
        self.acp_timer = SimTimer(net.kernel, self.acp, self._acp_out, ceiling=HOUSEKEEPING_S)
        for p in self.peers:
            self._flood_an_acp(f"d{p}")
        # neighbours heard while a pledge get their channels now
        for peer, ifname in list(self.table.entries):
            self._channel_for(peer, ifname, now)
        self.channel_timer.rearm()
        m = net.model
        net.kernel.after(self._jittered(m.dull_interval_s), self._periodic_dull)
        if root:
            self._start_proxy()
            self._registrar_flood()
        if m.asa_flood_s > 0:
            net.kernel.after(self.rng.uniform(0, m.asa_flood_s), self._asa_flood)

    def _jittered(self, period: float) -> float:
        j = self.net.model.flood_jitter
        return period * self.rng.uniform(1 - j, 1 + j)

    # ------------------------------------------------------------------ DULL
    def _flood_an_acp(self, ifname: str) -> None:
        obj, loc = our_flood(self.ll_str)
        self._dull_flood(ifname, obj, loc, DULL_TTL_MS, "dull_an_acp")

    def _dull_flood(self, ifname: str, obj: Objective, loc: Locator, ttl: int,
                    kind: str) -> None:
        _sid, out = self.dull.flood([TaggedObjective(obj, loc)], ttl, self.net.kernel.now,
                                    ifname=ifname)
        for item in out:
            if isinstance(item, SendMulticast):
                self.net.datagram(self, int(item.ifname[1:]), kind, self.net.deliver_dull,
                                  item.data)

    def _periodic_dull(self) -> None:
        for p in self.peers:
            self._flood_an_acp(f"d{p}")
        self.net.kernel.after(self._jittered(self.net.model.dull_interval_s), self._periodic_dull)

    def _start_proxy(self) -> None:
        if self.proxying:
            return
        self.proxying = True
        self._proxy_flood()

    def _proxy_flood(self) -> None:
        obj = Objective(AN_PROXY, gc.F_SYNCH, 1, "")
        loc = Locator(gc.O_IPv6_LOCATOR, self.ll_bytes, gc.IPPROTO_TCP, PROXY_PORT)
        for p in self.peers:  # every DULL link, pledge there or not (brski/proxy/part.py)
            self._dull_flood(f"d{p}", obj, loc, PROXY_TTL_MS, "dull_an_proxy")
        self.net.kernel.after(self._jittered(self.net.model.proxy_interval_s), self._proxy_flood)

    def dull_received(self, ifname: str, src: bytes, data: bytes) -> None:
        now = self.net.kernel.now
        self.dull_timer.feed(self.dull.receive_datagram(ifname, src, data, now))

    def _dull_out(self, outputs: Sequence[Any]) -> None:
        now = self.net.kernel.now
        for item in outputs:
            if not isinstance(item, FloodReceived):
                continue
            name = item.objective.name
            if name == AN_ACP:
                offer = read_offer(item)
                if isinstance(offer, Offer):
                    self._heard_neighbour(offer, item, now)
            elif name == AN_PROXY and not self.enrolled and item.locator is not None:
                address = str(ipaddress.IPv6Address(item.locator.address))
                port = item.locator.port or PROXY_PORT
                if self.book.heard(ProxyLocator(address, port, item.ifname), now):
                    self.book_timer.rearm()

    def _heard_neighbour(self, offer: Offer, flood: FloodReceived, now: float) -> None:
        events = self.table.heard(offer.peer, flood.ifname, offer.methods, offer.port,
                                  flood.ttl_ms, now)
        self.table_timer.rearm()
        for event in events:
            if isinstance(event, AdjacencyUp):
                if self.running:
                    if now - self._answered.get(flood.ifname, -1.0) >= 1.0:
                        self._answered[flood.ifname] = now
                        self._flood_an_acp(flood.ifname)
                    self._channel_for(event.peer, event.dull_ifname, now)
            elif isinstance(event, AdjacencyDown):
                self._adjacency_down(event.peer, event.dull_ifname, now)

    def _table_out(self, outputs: Sequence[Any]) -> None:
        now = self.net.kernel.now
        for event in outputs:
            if isinstance(event, AdjacencyDown):
                self._adjacency_down(event.peer, event.dull_ifname, now)

    # ------------------------------------------------------------------ pledge
    def _book_out(self, outputs: Sequence[Any]) -> None:
        for item in outputs:
            if isinstance(item, TryProxy):
                self.net.enrol(self, item.locator)

    # ------------------------------------------------------------------ channels
    def _channel_for(self, peer: str, ifname: str, now: float) -> None:
        if not self.running:
            return
        ch = self.channels.get(ifname, peer)
        if ch is None:
            fsm = PeerChannel(int(self.address), rng=self.rng)
            ch = Channel(peer, ifname, self.channels.allocate_if_id(), fsm)
            self.channels.add(ch)
        self._channel_actions(ch, ch.fsm.adjacency_up(now))

    def _adjacency_down(self, peer: str, ifname: str, now: float) -> None:
        ch = self.channels.get(ifname, peer)
        if ch is not None:
            self._channel_actions(ch, ch.fsm.adjacency_down(now))

    def _channel_due(self, dues: Sequence[Any]) -> None:
        for due in dues:
            self._channel_actions(due.channel, due.actions, rearm=False)

    def _channel_actions(self, ch: Channel, actions: Sequence[Any], rearm: bool = True) -> None:
        net, now = self.net, self.net.kernel.now
        peer = int(ch.dull_ifname[1:])
        for action in actions:
            if isinstance(action, Prepare):
                self.prepared.add(peer)
            elif isinstance(action, Initiate):
                self.prepared.add(peer)
                net.ike_attempt(self, peer)
            elif isinstance(action, Verify):
                other = net.nodes[peer]
                self._channel_actions(ch, ch.fsm.peer_verified(
                    action.sa_id, int(other.address), f"node{peer}", now), rearm=False)
            elif isinstance(action, Terminate):
                net.sa_deleted(self, peer, action.sa_id)
            elif isinstance(action, Remove):
                for sa_id in action.sa_ids:
                    net.sa_deleted(self, peer, sa_id, local=False)
                self.channels.remove(ch)
                self.prepared.discard(peer)
                if ch.acp_ifname is not None:
                    self._channel_gone(ch)
            elif isinstance(action, Release):
                self.prepared.discard(peer)
            elif isinstance(action, Activate):
                ch.acp_ifname = f"a{peer}"
                self.table.confirm(ch.peer, ch.dull_ifname)
                self._channel_up(ch.acp_ifname, now)
            elif isinstance(action, Deactivate):
                self._channel_gone(ch)
        if rearm:
            self.channel_timer.rearm()

    def _channel_up(self, ifname: str, now: float) -> None:
        self.net.channel_changed(self, int(ifname[1:]), True)
        assert self.rpl is not None and self.rpl_timer is not None
        self.rpl_timer.feed(self.rpl.interface_up(ifname, now))
        assert self.acp is not None and self.acp_timer is not None
        self.acp.add_interface(ifname, self.ll_bytes)
        if self.index == 0:  # the registrar announces itself on a new channel (AcpGraspInterfaceUp)
            self._flood_registrar(ifname)
        # grasp/part.py: repeat the cached AN_join_registrar on the new channel
        for entry in self.acp.get_flood(AN_JOIN_REGISTRAR, now):
            remaining = entry.expires - now
            if remaining <= 0:
                continue
            obj = entry.objective
            if self.net.model.repeat_loop_count is not None:
                obj = obj.with_loop_count(self.net.model.repeat_loop_count)
            self.net.count("grasp_flood_originated_repeat")
            _sid, out = self.acp.flood([TaggedObjective(obj, entry.locator)],
                                       int(remaining * 1000), now, ifname=ifname)
            self._acp_out(out)
        self.acp_timer.rearm()

    def _channel_gone(self, ch: Channel) -> None:
        ifname, now = ch.acp_ifname, self.net.kernel.now
        ch.acp_ifname = None
        if ifname is None:
            return
        self.net.channel_changed(self, int(ifname[1:]), False)
        if self.rpl is not None and self.rpl_timer is not None:
            self.rpl_timer.feed(self.rpl.interface_down(ifname, now))
        if self.acp is not None:
            self.acp.remove_interface(ifname)

    def responder_ready(self, peer: int) -> bool:
        """charon has a connection for this peer loaded."""
        if not self.running:
            return False
        ch = self.channels.get(f"d{peer}", self.net.nodes[peer].ll_str)
        return ch is not None and (peer in self.prepared or ch.fsm.verified_once)

    def channel(self, peer: int) -> Channel | None:
        return self.channels.get(f"d{peer}", self.net.nodes[peer].ll_str)

    # ------------------------------------------------------------------ RPL
    def rpl_received(self, ifname: str, src: ipaddress.IPv6Address, message: Any,
                     dst: ipaddress.IPv6Address) -> None:
        if self.rpl is None or self.rpl_timer is None:
            return
        now = self.net.kernel.now
        self.rpl_timer.feed(self.rpl.receive(ifname, src, 0, message, now, dst))

    def _rpl_out(self, sends: Sequence[Send]) -> None:
        for send in sends:
            self.net.rpl_send(self, int(send.ifname[1:]), send)

    # ------------------------------------------------------------------ ACP GRASP
    def _registrar_flood(self) -> None:
        if self.acp is not None and self.acp.interfaces:
            self._flood_registrar(None)
        self.net.kernel.after(self.net.model.registrar_flood_s, self._registrar_flood)

    def _flood_registrar(self, ifname: str | None) -> None:
        assert self.acp is not None
        obj = Objective(AN_JOIN_REGISTRAR, gc.F_SYNCH, 255, "EST-TLS")
        loc = Locator(gc.O_IPv6_LOCATOR, self.address.packed, gc.IPPROTO_TCP, REGISTRAR_PORT)
        self.net.count("grasp_flood_originated" if ifname is None
                       else "grasp_flood_originated_repeat")
        _sid, out = self.acp.flood([TaggedObjective(obj, loc)], REGISTRAR_TTL_MS,
                                   self.net.kernel.now, ifname=ifname)
        self._acp_out(out)

    def _asa_flood(self) -> None:
        assert self.acp is not None
        if self.acp.interfaces:
            obj = Objective("SIM.asa", gc.F_SYNCH, 255, self.index)
            self.net.count("asa_flood_originated")
            _sid, out = self.acp.flood([TaggedObjective(obj, None)], ASA_TTL_MS,
                                       self.net.kernel.now)
            self._acp_out(out, kind="asa_flood")
        self.net.kernel.after(self._jittered(self.net.model.asa_flood_s), self._asa_flood)

    def acp_received(self, ifname: str, src: bytes, data: bytes, kind: str) -> None:
        if self.acp is None or self.acp_timer is None or ifname not in self.acp.interfaces:
            return
        out = self.acp.receive_datagram(ifname, src, data, self.net.kernel.now)
        self._acp_out(out, kind=kind, relayed=True)
        self.acp_timer.rearm()

    def _acp_out(self, outputs: Sequence[Any], kind: str = "grasp_flood",
                 relayed: bool = False) -> None:
        for item in outputs:
            if isinstance(item, SendMulticast):
                if relayed:
                    self.net.count(f"{kind}_relayed")
                self.net.stream(self, int(item.ifname[1:]), kind, item.data)
            elif isinstance(item, FloodReceived) and item.objective.name == AN_JOIN_REGISTRAR:
                if not self.knows_registrar:
                    self.knows_registrar = True
                    self._start_proxy()


class SimNet:
    def __init__(self, topology: Topology, model: Model, seed: int) -> None:
        self.topology = topology
        self.model = model
        self.kernel = Kernel(seed)
        rng = self.kernel.rng
        self.latency: dict[tuple[int, int], float] = {}
        for a, b in topology.edges:
            lat = rng.uniform(model.latency_min_s, model.latency_max_s)
            self.latency[(a, b)] = self.latency[(b, a)] = lat
        adj = topology.neighbours()
        self.nodes = [SimNode(self, i, adj[i]) for i in range(topology.nodes)]
        self.counts: Counter[str] = Counter()
        self.root_counts: Counter[str] = Counter()   # received by the root, by kind
        self.up_edges: set[tuple[int, int]] = set()  # (a, b): a's channel to b is active
        self.enrolments: list[float] = []            # registrar completion times
        self.registrar_free_at = 0.0
        self._sa_seq = 0
        self.dao_bytes_to_root = 0

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        for node in self.nodes:
            if node.index == 0 or self.model.enrolled_at_start:
                self.kernel.at(0.0, node.got_ldevid, 0.0)

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n

    # ------------------------------------------------------------------ links
    def datagram(self, sender: SimNode, peer: int, kind: str, deliver: Any, *args: Any) -> None:
        """A UDP-like datagram on the link sender-peer: counted, maybe lost, delayed."""
        self.counts[kind] += 1
        if self.model.loss and self.kernel.rng.random() < self.model.loss:
            self.counts["lost"] += 1
            return
        self.kernel.after(self.latency[(sender.index, peer)], deliver, sender.index, peer, *args)

    def deliver_dull(self, sender: int, peer: int, data: bytes) -> None:
        self.nodes[peer].dull_received(f"d{sender}", self.nodes[sender].ll_bytes, data)

    def stream(self, sender: SimNode, peer: int, kind: str, data: bytes) -> None:
        """ACP GRASP over link-local TCP inside the channel: not lost, only delayed."""
        self.counts[kind] += 1
        if peer == 0:
            self.root_counts[kind] += 1
        self.kernel.after(self.latency[(sender.index, peer)], self._deliver_stream, sender.index,
                          peer, data, kind)

    def _deliver_stream(self, sender: int, peer: int, data: bytes, kind: str) -> None:
        self.nodes[peer].acp_received(f"a{sender}", self.nodes[sender].ll_bytes, data, kind)

    def rpl_send(self, sender: SimNode, peer: int, send: Send) -> None:
        message = send.message
        kind = ("rpl_dio" if isinstance(message, Dio) else "rpl_dao" if isinstance(message, Dao)
                else "rpl_dao_ack" if isinstance(message, DaoAck)
                else "rpl_dis" if isinstance(message, Dis) else "rpl_other")
        if kind == "rpl_dao" and peer == 0:
            self.dao_bytes_to_root += len(send.packet())
        self.datagram(sender, peer, kind, self._deliver_rpl, send, kind)

    def _deliver_rpl(self, sender: int, peer: int, send: Send, kind: str) -> None:
        node = self.nodes[peer]
        if (peer, sender) not in self.up_edges:
            self.counts["rpl_no_channel"] += 1
            return
        if peer == 0:
            self.root_counts[kind] += 1
        node.rpl_received(f"a{sender}", self.nodes[sender].ll, send.message, send.dst)

    def channel_changed(self, node: SimNode, peer: int, up: bool) -> None:
        if up:
            self.up_edges.add((node.index, peer))
        else:
            self.up_edges.discard((node.index, peer))

    # ------------------------------------------------------------------ IKE model
    def ike_attempt(self, node: SimNode, peer: int) -> None:
        m, rng = self.model, self.kernel.rng
        self.counts["ike_attempts"] += 1
        delay = 0.0
        lost_all = True
        tries = (0.0, *IKE_RETRANSMITS)
        for k, wait in enumerate(tries):
            delay += wait if k else 0.0
            if m.loss and rng.random() < 1 - (1 - m.loss) ** 4:
                self.counts["ike_datagrams_lost"] += 1
                continue
            lost_all = False
            break
        if lost_all:
            self.kernel.after(delay, self._ike_timeout, node.index, peer)
            return
        delay += m.ike_s * rng.uniform(1 - m.ike_jitter, 1 + m.ike_jitter)
        delay += 4 * self.latency[(node.index, peer)]
        self.kernel.after(delay, self._ike_done, node.index, peer)

    def _ike_timeout(self, a: int, b: int) -> None:
        node = self.nodes[a]
        ch = node.channel(b)
        if ch is not None:
            node._channel_actions(ch, ch.fsm.initiate_failed(self.kernel.now, "timeout",
                                                             answered=False))

    def _ike_done(self, a: int, b: int) -> None:
        now = self.kernel.now
        init, resp = self.nodes[a], self.nodes[b]
        ch = init.channel(b)
        if ch is None:
            return
        if not resp.responder_ready(a):
            self.counts["ike_no_proposal"] += 1
            init._channel_actions(ch, ch.fsm.initiate_failed(now, "NO_PROPOSAL_CHOSEN"))
            other = resp.channel(a)
            if other is not None:
                resp._channel_actions(other, other.fsm.knocked(now))
            return
        self._sa_seq += 1
        sa_id = str(self._sa_seq)
        ch.fsm.initiate_succeeded()
        init._channel_actions(ch, ch.fsm.child_up(sa_id, sa_id, True, f"node{b}"))
        other = resp.channel(a)
        if other is not None:
            resp._channel_actions(other, other.fsm.child_up(sa_id, sa_id, False, f"node{a}"))

    def sa_deleted(self, node: SimNode, peer: int, sa_id: str, local: bool = True) -> None:
        """A Terminate/Remove: the IKE SA goes on both sides (the peer hears the DELETE)."""
        now = self.kernel.now
        if local:
            ch = node.channel(peer)
            if ch is not None:
                node._channel_actions(ch, ch.fsm.sa_down(sa_id, now), rearm=False)
        self.kernel.after(self.latency[(node.index, peer)], self._peer_sa_down, peer, node.index,
                          sa_id)

    def _peer_sa_down(self, node_index: int, peer: int, sa_id: str) -> None:
        node = self.nodes[node_index]
        ch = node.channel(peer)
        if ch is not None:
            node._channel_actions(ch, ch.fsm.sa_down(sa_id, self.kernel.now))

    # ------------------------------------------------------------------ BRSKI model
    def hops_to_root(self, node: SimNode) -> int | None:
        """Along preferred parents; None if that walk does not end at the root."""
        hops, seen = 0, set()
        while node.index != 0:
            rpl = node.rpl
            if rpl is None or not rpl.member or not rpl.parents or node.index in seen:
                return None
            if rpl.dodag_id != self.nodes[0].address:
                return None
            seen.add(node.index)
            node = self.nodes[int(rpl.parents[0][0][1:])]
            hops += 1
        return hops

    def path_rtt(self, node: SimNode) -> float:
        rtt = 0.0
        while node.index != 0 and node.rpl is not None and node.rpl.parents:
            parent = int(node.rpl.parents[0][0][1:])
            rtt += 2 * self.latency[(node.index, parent)]
            node = self.nodes[parent]
        return rtt

    def enrol(self, pledge: SimNode, locator: ProxyLocator) -> None:
        m, now = self.model, self.kernel.now
        proxy = self.nodes[int((locator.ifname or "d0")[1:])]
        rtt = 2 * self.latency[(pledge.index, proxy.index)]
        self.counts["enrol_attempts"] += 1
        if not (proxy.running and proxy.knows_registrar and self.hops_to_root(proxy) is not None):
            self.kernel.after(rtt, self._enrol_failed, pledge.index, locator)
            return
        rtt += self.path_rtt(proxy)
        arrive = now + m.pledge_cpu_s + rtt * (m.enrol_rtts - 1)
        start = max(arrive, self.registrar_free_at)
        self.registrar_free_at = start + m.registrar_service_s
        done = self.registrar_free_at + rtt
        self.kernel.at(done, self._enrolled, pledge.index, locator, self.registrar_free_at)

    def _enrol_failed(self, index: int, locator: ProxyLocator) -> None:
        node = self.nodes[index]
        self.counts["enrol_failed"] += 1
        node.book.failed(locator, self.kernel.now, "proxy cannot relay")
        node.book_timer.rearm()

    def _enrolled(self, index: int, locator: ProxyLocator, at_registrar: float) -> None:
        node = self.nodes[index]
        node.book.done(locator)
        if node.enrolled:
            return
        self.enrolments.append(at_registrar)
        node.got_ldevid(self.kernel.now)

    # ------------------------------------------------------------------ state
    def all_enrolled(self) -> bool:
        return all(n.enrolled for n in self.nodes)

    def all_channels(self) -> bool:
        return len(self.up_edges) == 2 * len(self.topology.edges)

    def root_routes(self) -> int:
        root = self.nodes[0].rpl
        if root is None:
            return 0
        return sum(1 for r in root.routes() if r.kind is RouteKind.UNICAST)

    def full_acp(self) -> bool:
        """Every node enrolled, every channel up, every node's parents lead to the root and
        the root has a route to every other node's prefix."""
        if not self.all_enrolled() or not self.all_channels():
            return False
        if any(self.hops_to_root(n) is None for n in self.nodes[1:]):
            return False
        root = self.nodes[0].rpl
        targets = {r.prefix for r in root.routes() if r.kind is RouteKind.UNICAST}
        return all(ipaddress.IPv6Network((n.address, 127)) in targets for n in self.nodes[1:])


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by obj and everything it reaches (each object once), as sys.getsizeof
    counts them; classes, modules, functions and the RNG's shared parts are not followed."""
    import sys
    import types

    seen = set() if seen is None else seen
    total = 0
    stack = [obj]
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
            types.MethodType, SimNet, Kernel)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, random.Random):
            continue
        else:
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for cls in type(o).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if isinstance(slot, str) and hasattr(o, slot):
                        stack.append(getattr(o, slot))
    return total

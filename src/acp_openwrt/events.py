"""What happened in acpd: small immutable events on a per-node bus, every type in this module.

Parts talk to each other in two ways only (docs/parts.md):

- **events** (this module), for what happened: a link was adopted, a channel came up, a
  registrar was heard. The publisher does not know who listens; a part with no listener
  costs nothing. Every event type is a frozen dataclass defined here, and `Event` names them all;
- **ports** (`node_context.Ports`), for the few real queries and commands that need an answer
  from one particular part, typed as Protocols and `None` while that part does not run.

The coordinator owns one `EventBus` per build of the parts; each part subscribes to the events
it acts on and publishes what it learned. Handlers are plain callables run in publish order on
the event loop; one that raises is logged and the others still run. Messages that leave acpd
(the join proxy's handover protocol, ubus events) are not events: they live with their
protocol (`brski/proxy/handover.py`, `control/`).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

LOG = logging.getLogger("acpd.events")


@dataclass(frozen=True)
class LinkAdopted:
    """A host interface got its twin in DULL, up and with a link-local address."""
    host_ifname: str
    dull_ifname: str
    dull_ifindex: int
    link_local: str


@dataclass(frozen=True)
class LinkReleased:
    """The DULL twin of a host interface is gone (host link removed or left its bridge)."""
    host_ifname: str
    dull_ifname: str


@dataclass(frozen=True)
class AdjacencyUp:
    """A neighbour's AN_ACP flood was heard on a DULL link (first time, or methods changed)."""
    peer: str            # the neighbour's link-local address (its flood locator)
    dull_ifname: str
    methods: tuple[str, ...]   # e.g. ("IKEv2",)
    port: int            # locator port (500 for IKEv2)


@dataclass(frozen=True)
class AdjacencyAlive:
    """The neighbour answered an echo to all nodes on its DULL link (discovery/liveness.py):
    its address exists, so it is no spoofed locator. Its channel is worth trying first."""
    peer: str
    dull_ifname: str


@dataclass(frozen=True)
class AdjacencyDown:
    """The neighbour's flood ttl ran out, or its DULL link went away."""
    peer: str
    dull_ifname: str


@dataclass(frozen=True)
class ChannelUp:
    """A secure channel is up: `acp_ifname` is in the ACP namespace, up, with a link-local."""
    peer: str
    dull_ifname: str
    acp_ifname: str
    peer_node_name: str   # the peer certificate's acp-node-name


@dataclass(frozen=True)
class ChannelDown:
    peer: str
    acp_ifname: str


@dataclass(frozen=True)
class IdentityChanged:
    """The node has a (new) LDevID: e.g. BRSKI enrolment finished. Paths of the stored files;
    `report`, the enrolment's enrollstatus still to send (brski.pledge.enroll_report's
    PendingReport), which the coordinator sends off the path of its restart."""
    cert_path: str
    key_path: str
    trust_anchors_path: str
    report: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class ProxyHeard:
    """An AN_Proxy flood was heard in DULL: a BRSKI join proxy at [address%dull_ifname]:port."""
    address: str
    port: int
    dull_ifname: str


@dataclass(frozen=True)
class AnProxyStart:
    """The join proxy can relay: flood AN_Proxy on this DULL interface (RFC 8995 §4.1.1,
    ["AN_Proxy", 4, 1, ""] with an O_IPv6_LOCATOR [address]:port over TCP, ttl 180000 ms)."""
    dull_ifname: str
    address: str
    port: int


@dataclass(frozen=True)
class PledgeSolicited:
    """A pledge asked for a join proxy (its DULL M_DISCOVERY for AN_Proxy) on a link that our
    join proxy serves: an enrolment is coming. At most once a second per link (the discovery
    part's answer limit)."""
    dull_ifname: str


@dataclass(frozen=True)
class AnProxyStop:
    """Stop flooding AN_Proxy on this DULL interface (registrar lost, proxy down, link gone)."""
    dull_ifname: str


@dataclass(frozen=True)
class RegistrarHeard:
    """A BRSKI registrar is announced in the ACP (AN_join_registrar with EST-TLS, RFC 8995 §4.3)
    at [address]:port for `ttl_ms` more milliseconds; ttl_ms 0 withdraws it. Published by the
    ACP GRASP part (floods and discovery) and by the registrar part for its own node (a node
    never hears its own floods); the join proxy listens."""
    address: str
    port: int
    ttl_ms: int


@dataclass(frozen=True)
class EstServerHeard:
    """An EST server reachable in the ACP (SRV.est, or a registrar: RFC 8994 §6.2.5.1); the
    pledge part renews the LDevID there."""
    address: str
    port: int


@dataclass(frozen=True)
class AcpGraspInterfaceUp:
    """The ACP GRASP now runs on this secure-channel interface (after ChannelUp, once it joined
    the link): parts that announce something flood it again, so the new neighbour hears it."""
    acp_ifname: str


@dataclass(frozen=True)
class AcpRoutesChanged:
    """RPL changed what the ACP can route to or from this node: it installed routes here
    (`installed`), or a parent acknowledged our DAO (it routes to us now). What waited for a
    path across the ACP (the join proxy's registrar probe) tries again at once."""
    installed: bool


@dataclass(frozen=True)
class ConnectSubnetUp:
    """An ACP connect interface is in the ACP namespace, addressed, and advertising its subnet;
    RPL adds the subnet as a DAO target when `dao_target` (RFC 8994 §8.1.1)."""
    name: str          # the UCI section name
    ifname: str        # the interface in the ACP namespace
    prefix: str        # the connect subnet, e.g. fd89:b714:f3db:2001::/64
    dao_target: bool   # False when the subnet lies inside the node's own RPL prefix


@dataclass(frozen=True)
class ConnectSubnetDown:
    """The connect subnet is gone (RPL withdraws the DAO target)."""
    name: str
    ifname: str
    prefix: str


@dataclass(frozen=True)
class RevocationUpdated:
    """The node's CRLs (RFC 8994 §6.2.5.3) changed: `revoked` is every revoked certificate
    they list, as (issuer name DER, serial). Channels close those to a revoked peer and refuse
    new ones; published by the revocation part at start (the CRLs kept) and on every change."""
    revoked: frozenset[tuple[bytes, int]]


@dataclass(frozen=True)
class CrlDistributionPointsSeen:
    """A verified peer's certificate names CRL distribution points the channels had not seen
    (e.g. another registrar's): the revocation part fetches those CRLs too. `cas`: the CA
    certificates (DER) its certificate verified through up to one of our anchors (another
    registrar's sub-CA signs that registrar's CRL)."""
    urls: tuple[str, ...]
    cas: tuple[bytes, ...] = ()


Event = (LinkAdopted | LinkReleased | AdjacencyUp | AdjacencyAlive | AdjacencyDown | ChannelUp
         | ChannelDown | IdentityChanged | ProxyHeard | AnProxyStart | PledgeSolicited | AnProxyStop
         | RegistrarHeard | EstServerHeard | AcpGraspInterfaceUp | AcpRoutesChanged
         | ConnectSubnetUp | ConnectSubnetDown | RevocationUpdated | CrlDistributionPointsSeen)
"""Every event type published on the bus (a test checks that no other module defines one)."""
E = TypeVar("E", bound=Event)


class EventBus:
    """Synchronous fan-out of events to subscribers, in subscription order."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[object], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call `handler(event)` for every published event of `kind`; returns an unsubscribe."""
        self._handlers[kind].append(handler)  # type: ignore[arg-type]
        return lambda: self._handlers[kind].remove(handler)  # type: ignore[arg-type]

    def publish(self, event: Event) -> None:
        for handler in list(self._handlers.get(type(event), ())):
            try:
                handler(event)
            except Exception:  # one broken part must not stop the others hearing it
                LOG.exception("handler %r failed on %r", handler, event)

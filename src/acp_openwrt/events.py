"""What acpd's parts tell each other: small immutable events on a per-node bus.

The coordinator owns one `EventBus`; each part subscribes to the events it acts on and
publishes what it learned. Parts never call each other directly, so each can be built and
tested alone (publish an event, look at what comes out). Handlers are plain callables run
in publish order on the event loop; one that raises is logged and the others still run.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, Union

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
    """The node has a (new) LDevID: e.g. BRSKI enrolment finished. Paths of the stored files."""
    cert_path: str
    key_path: str
    trust_anchors_path: str


@dataclass(frozen=True)
class ProxyHeard:
    """An AN_Proxy flood was heard in DULL: a BRSKI join proxy at [address%dull_ifname]:port."""
    address: str
    port: int
    dull_ifname: str


Event = Union[LinkAdopted, LinkReleased, AdjacencyUp, AdjacencyDown, ChannelUp, ChannelDown,
              IdentityChanged, ProxyHeard]
E = TypeVar("E")


class EventBus:
    """Synchronous fan-out of events to subscribers, in subscription order."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[object], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call `handler(event)` for every published event of `kind`; returns an unsubscribe."""
        self._handlers[kind].append(handler)  # type: ignore[arg-type]
        return lambda: self._handlers[kind].remove(handler)  # type: ignore[arg-type]

    def publish(self, event: object) -> None:
        for handler in list(self._handlers.get(type(event), ())):
            try:
                handler(event)
            except Exception:  # one broken part must not stop the others hearing it
                LOG.exception("handler %r failed on %r", handler, event)

"""Topology specs: pure, validated data describing nodes, veth links and bridges (no I/O).

`lab.topology` brings a spec up in network namespaces; this module only says what to build,
so specs can be made, compared and checked without root (and by the command line, which
must reject a bad kind or size before touching the system).
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

IFNAME_MAX = 15  # IFNAMSIZ - 1
ADDRGENMODES = {"eui64": 0, "none": 1, "stable_privacy": 2, "random": 3}
_NODE_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,11}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_IFNAME_BAD = re.compile(r"[\s/:%]")


class TopologyError(ValueError):
    """A topology that cannot be built as described (one line, names the culprit)."""


def check_ifname(name: str) -> str:
    """Kernel rules for an interface name: 1-15 bytes, no whitespace, '/', ':' or '%'."""
    if (not name or len(name.encode()) > IFNAME_MAX or name in (".", "..")
            or _IFNAME_BAD.search(name)):
        raise TopologyError(
            f"interface name {name!r} is invalid (1-{IFNAME_MAX} chars, no space / : %)")
    return name


def check_prefix(prefix: str) -> str:
    """Lower-case letter then letters/digits, at most 10: no '-' so `<prefix>-` never matches
    a longer prefix."""
    if not _PREFIX_RE.match(prefix):
        raise TopologyError(f"prefix {prefix!r} is invalid (a-z then a-z0-9, at most 10 chars)")
    return prefix


def random_prefix() -> str:
    """A short prefix unlikely to collide with a parallel run: 'lab' + 6 hex digits."""
    return "lab" + secrets.token_hex(3)


@dataclass(frozen=True)
class End:
    """One end of a link: the interface `ifname` in `node`, optionally a port of `bridge` there."""

    node: str
    ifname: str
    bridge: str | None = None


@dataclass(frozen=True)
class Link:
    """A veth pair between two nodes."""

    a: End
    b: End

    def end_at(self, node: str) -> End:
        return self.a if self.a.node == node else self.b

    def other(self, node: str) -> End:
        return self.b if self.a.node == node else self.a


@dataclass(frozen=True)
class NodeSpec:
    """A node; a `switch` node is pure L2 (IPv6 off), e.g. the middle of a shared segment."""

    name: str
    bridges: tuple[str, ...] = ()
    switch: bool = False


@dataclass(frozen=True)
class TopologySpec:
    """Validated on construction. `dad=False` sets accept_dad=0 so link-locals are usable at
    once."""

    nodes: tuple[NodeSpec, ...]
    links: tuple[Link, ...] = ()
    dad: bool = False
    addrgenmode: str = "eui64"

    def __post_init__(self) -> None:
        names: set[str] = set()
        for node in self.nodes:
            if not _NODE_RE.match(node.name):
                raise TopologyError(
                    f"node name {node.name!r} is invalid (a-z0-9_, at most 12 chars)")
            if node.name in names:
                raise TopologyError(f"duplicate node name {node.name!r}")
            names.add(node.name)
        if self.addrgenmode not in ADDRGENMODES:
            raise TopologyError(
                f"addrgenmode {self.addrgenmode!r} is not one of {sorted(ADDRGENMODES)}")
        taken = {(n.name, check_ifname(b)) for n in self.nodes for b in n.bridges}
        if len(taken) != sum(len(n.bridges) for n in self.nodes):
            raise TopologyError("duplicate bridge name in a node")
        for link in self.links:
            if link.a.node == link.b.node:
                raise TopologyError(f"link {link.a.ifname}-{link.b.ifname} loops back to node "
                                    f"{link.a.node!r}")
            for end in (link.a, link.b):
                if end.node not in names:
                    raise TopologyError(f"link end {end.ifname!r} names unknown node {end.node!r}")
                if (end.node, check_ifname(end.ifname)) in taken:
                    raise TopologyError(f"duplicate interface {end.ifname!r} in node {end.node!r}")
                taken.add((end.node, end.ifname))
                if end.bridge is not None and end.bridge not in self.node(end.node).bridges:
                    raise TopologyError(
                        f"{end.node}/{end.ifname}: node has no bridge {end.bridge!r}")

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise TopologyError(f"no node {name!r}")

    def links_of(self, node: str) -> list[Link]:
        return [lk for lk in self.links if node in (lk.a.node, lk.b.node)]

    def ifname(self, node: str, peer: str) -> str:
        """The interface of `node` on its (first) link to `peer`."""
        return ifname_towards(self.links, node, peer)


def ifname_towards(links: Iterable[Link], node: str, peer: str) -> str:
    for link in links:
        if node in (link.a.node, link.b.node) and link.other(node).node == peer:
            return link.end_at(node).ifname
    raise TopologyError(f"no link between {node!r} and {peer!r}")


class SpecBuilder:
    """Collects nodes and links, naming interfaces eth0, eth1, ... per node in link order."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeSpec] = {}
        self._links: list[Link] = []
        self._count: dict[str, int] = {}

    def node(self, name: str, bridges: Sequence[str] = (), switch: bool = False) -> SpecBuilder:
        if name in self._nodes:
            raise TopologyError(f"duplicate node name {name!r}")
        self._nodes[name] = NodeSpec(name, tuple(bridges), switch)
        return self

    def _next(self, node: str, ifname: str | None) -> str:
        if ifname is not None:
            return ifname
        k = self._count.get(node, 0)
        self._count[node] = k + 1
        return f"eth{k}"

    def link(self, a: str, b: str, *, ifname_a: str | None = None, ifname_b: str | None = None,
             bridge_a: str | None = None, bridge_b: str | None = None) -> SpecBuilder:
        end_a = End(a, self._next(a, ifname_a), bridge_a)
        end_b = End(b, self._next(b, ifname_b), bridge_b)
        self._links.append(Link(end_a, end_b))
        return self

    def build(self, **options: Any) -> TopologySpec:
        return TopologySpec(tuple(self._nodes.values()), tuple(self._links), **options)


def _names(n: int, least: int) -> list[str]:
    if n < least:
        raise TopologyError(f"need at least {least} nodes, got {n}")
    return [f"n{i}" for i in range(1, n + 1)]


def from_edges(edges: Iterable[tuple[str, str]], nodes: Iterable[str] = (),
               **options: Any) -> TopologySpec:
    """Any graph: one link per edge; `nodes` adds isolated nodes and fixes the order."""
    edges = list(edges)
    builder = SpecBuilder()
    for name in dict.fromkeys([*nodes, *(x for e in edges for x in e)]):
        builder.node(name)
    for a, b in edges:
        builder.link(a, b)
    return builder.build(**options)


def line(n: int, **options: Any) -> TopologySpec:
    """n1 - n2 - ... - nN."""
    names = _names(n, 1)
    return from_edges(pairwise(names), names, **options)


def ring(n: int, **options: Any) -> TopologySpec:
    """A line closed from nN back to n1."""
    names = _names(n, 3)
    return from_edges([*pairwise(names), (names[-1], names[0])], names, **options)


def star(n: int, **options: Any) -> TopologySpec:
    """n1 in the middle, linked to each of n2..nN."""
    names = _names(n, 2)
    return from_edges([(names[0], x) for x in names[1:]], names, **options)


def mesh(n: int, **options: Any) -> TopologySpec:
    """Every node linked to every other."""
    names = _names(n, 2)
    return from_edges([(a, b) for i, a in enumerate(names) for b in names[i + 1:]], names,
                      **options)


def segment(n: int, **options: Any) -> TopologySpec:
    """n1..nN on one shared L2 segment: each node's eth0 is a port (p1..pN) of br0 in node `sw`."""
    names = _names(n, 2)
    builder = SpecBuilder().node("sw", bridges=["br0"], switch=True)
    for i, name in enumerate(names, 1):
        builder.node(name).link(name, "sw", ifname_b=f"p{i}", bridge_b="br0")
    return builder.build(**options)


BUILDERS = {"line": line, "ring": ring, "star": star, "mesh": mesh, "segment": segment}


def named(kind: str, n: int, **options: Any) -> TopologySpec:
    """A ready-made spec by name, for the command line: named("line", 3)."""
    if kind not in BUILDERS:
        raise TopologyError(f"unknown topology {kind!r} (one of {', '.join(BUILDERS)})")
    return BUILDERS[kind](n, **options)

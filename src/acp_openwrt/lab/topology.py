"""Declarative test topologies: nodes are network namespaces, links are veth pairs.

A `TopologySpec` is pure data (validated, no I/O): nodes, links between them, bridges inside a
node with link ends as members. A `Topology` brings a spec up under a unique prefix (node `n1`
lives in namespace `<prefix>-n1`; acpd's own namespaces for that node can be `<prefix>-n1-dull`
and are still caught by `cleanup_stale(prefix)`), and removes all of it again, also when a test
fails or `up()` stops half way.
"""
from __future__ import annotations

import contextlib
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute

from acp_openwrt import netns as netns_exec
from acp_openwrt.netns import cleanup_stale  # noqa: F401  (re-exported for tests and the CLI)

IFNAME_MAX = 15  # IFNAMSIZ - 1
ADDRGENMODES = {"eui64": 0, "none": 1, "stable_privacy": 2, "random": 3}
_NODE_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,11}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_IFNAME_BAD = re.compile(r"[\s/:%]")
IFA_F_NODAD = 0x02
NETLINK_ROUTE = 0


class TopologyError(ValueError):
    """A topology that cannot be built as described (one line, names the culprit)."""


def check_ifname(name: str) -> str:
    """Kernel rules for an interface name: 1-15 bytes, no whitespace, '/', ':' or '%'."""
    if not name or len(name.encode()) > IFNAME_MAX or name in (".", "..") or _IFNAME_BAD.search(name):
        raise TopologyError(f"interface name {name!r} is invalid (1-{IFNAME_MAX} chars, no space / : %)")
    return name


def check_prefix(prefix: str) -> str:
    """Lower-case letter then letters/digits, at most 10: no '-' so `<prefix>-` never matches a longer prefix."""
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
    """Validated on construction. `dad=False` sets accept_dad=0 so link-locals are usable at once."""

    nodes: tuple[NodeSpec, ...]
    links: tuple[Link, ...] = ()
    dad: bool = False
    addrgenmode: str = "eui64"

    def __post_init__(self) -> None:
        names: set[str] = set()
        for node in self.nodes:
            if not _NODE_RE.match(node.name):
                raise TopologyError(f"node name {node.name!r} is invalid (a-z0-9_, at most 12 chars)")
            if node.name in names:
                raise TopologyError(f"duplicate node name {node.name!r}")
            names.add(node.name)
        if self.addrgenmode not in ADDRGENMODES:
            raise TopologyError(f"addrgenmode {self.addrgenmode!r} is not one of {sorted(ADDRGENMODES)}")
        taken = {(n.name, check_ifname(b)) for n in self.nodes for b in n.bridges}
        if len(taken) != sum(len(n.bridges) for n in self.nodes):
            raise TopologyError("duplicate bridge name in a node")
        for link in self.links:
            if link.a.node == link.b.node:
                raise TopologyError(f"link {link.a.ifname}-{link.b.ifname} loops back to node {link.a.node!r}")
            for end in (link.a, link.b):
                if end.node not in names:
                    raise TopologyError(f"link end {end.ifname!r} names unknown node {end.node!r}")
                if (end.node, check_ifname(end.ifname)) in taken:
                    raise TopologyError(f"duplicate interface {end.ifname!r} in node {end.node!r}")
                taken.add((end.node, end.ifname))
                if end.bridge is not None and end.bridge not in self.node(end.node).bridges:
                    raise TopologyError(f"{end.node}/{end.ifname}: node has no bridge {end.bridge!r}")

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


def from_edges(edges: Iterable[tuple[str, str]], nodes: Iterable[str] = (), **options: Any) -> TopologySpec:
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
    return from_edges(zip(names, names[1:]), names, **options)


def ring(n: int, **options: Any) -> TopologySpec:
    """A line closed from nN back to n1."""
    names = _names(n, 3)
    return from_edges([*zip(names, names[1:]), (names[-1], names[0])], names, **options)


def star(n: int, **options: Any) -> TopologySpec:
    """n1 in the middle, linked to each of n2..nN."""
    names = _names(n, 2)
    return from_edges([(names[0], x) for x in names[1:]], names, **options)


def mesh(n: int, **options: Any) -> TopologySpec:
    """Every node linked to every other."""
    names = _names(n, 2)
    return from_edges([(a, b) for i, a in enumerate(names) for b in names[i + 1:]], names, **options)


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


@dataclass
class Node:
    """A node of a running topology: its namespace and ways to act inside it."""

    topology: Topology
    spec: NodeSpec
    netns: str

    @property
    def name(self) -> str:
        return self.spec.name

    def ifname(self, peer: str) -> str:
        """This node's interface on its (first) link to `peer` (links plugged at run time too)."""
        return ifname_towards(self.topology.links, self.name, peer)

    def run(self, argv: Sequence[str], *, timeout: float = 30, check: bool = False,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node and wait (output captured as text unless told otherwise)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(netns_exec.netns_argv(self.netns, argv), timeout=timeout, check=check, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a daemon inside the node, in its own session; `down()` ends it, and whatever it left inside."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(netns_exec.netns_argv(self.netns, argv), **kwargs)
        self.topology._processes.append(proc)
        return proc

    def iproute(self) -> IPRoute:
        """A pyroute2 handle on this node's namespace, for the calling thread (use it in `with`).

        Its netlink socket is made inside the namespace on a worker thread; IPRoute(netns=...)
        would fork the interpreter instead (see netns_exec.create_namespace).
        """
        return IPRoute(use_socket=netns_exec.socket_in(self.netns, socket.AF_NETLINK, socket.SOCK_DGRAM,
                                                        NETLINK_ROUTE))

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """Move the calling thread into this node for a block (see netns_exec.entered)."""
        return netns_exec.entered(self.netns)

    def socket(self, family: int = socket.AF_INET6, type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
        """A socket that lives in this node's namespace."""
        return netns_exec.socket_in(self.netns, family, type, proto)

    def index(self, ifname: str) -> int:
        with self.iproute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise TopologyError(f"{self.name}: no interface {ifname!r}")
        return int(found[0])

    def link_local(self, ifname: str, timeout: float = 5.0) -> str:
        """Wait until `ifname` has a usable (non-tentative) fe80:: address and return it."""
        with self.iproute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise TopologyError(f"{self.name}: no interface {ifname!r}")
            try:
                return netns_exec.wait_link_local(ipr, found[0], timeout)
            except (TimeoutError, OSError) as exc:
                raise type(exc)(f"{self.name}/{ifname}: {exc}") from None

    def add_address(self, ifname: str, address: str, prefixlen: int = 64, dad: bool = False) -> None:
        """Give an interface a fixed address (e.g. fe80::1 with addrgenmode none), DAD skipped by default."""
        with self.iproute() as ipr:
            ipr.addr("add", index=self.index(ifname), address=address, prefixlen=prefixlen,
                     IFA_FLAGS=0 if dad else IFA_F_NODAD)

    def set_link(self, ifname: str, up: bool) -> None:
        """Take an interface up or down (a neighbour appearing or going away)."""
        with self.iproute() as ipr:
            ipr.link("set", index=self.index(ifname), state="up" if up else "down")


def _configure(node: NodeSpec, spec: TopologySpec) -> None:
    """Inside the node (on a worker thread): sysctls that new links inherit, then lo up."""
    settings = {"accept_dad": "0" if not spec.dad else "1",
                "addr_gen_mode": str(ADDRGENMODES[spec.addrgenmode])}
    if node.switch:
        settings["disable_ipv6"] = "1"
    for key, value in settings.items():
        for scope in ("all", "default"):
            if key == "addr_gen_mode" and scope == "all":
                continue
            with open(f"/proc/sys/net/ipv6/conf/{scope}/{key}", "w") as fh:
                fh.write(value)
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for bridge in node.bridges:
            ipr.link("add", ifname=bridge, kind="bridge", br_stp_state=0, br_forward_delay=0,
                     br_mcast_snooping=0)
            ipr.link("set", index=ipr.link_lookup(ifname=bridge)[0], state="up")


def _bring_up(node: str, links: Sequence[Link]) -> None:
    """Inside the node: enslave bridge ports and set every link end up."""
    with IPRoute() as ipr:
        for link in links:
            end = link.end_at(node)
            index = ipr.link_lookup(ifname=end.ifname)[0]
            if end.bridge is not None:
                ipr.link("set", index=index, master=ipr.link_lookup(ifname=end.bridge)[0])
            ipr.link("set", index=index, state="up")


@dataclass
class Topology:
    """A spec brought up under `prefix`. Use `with Topology(spec) as topo:` or up()/down()."""

    spec: TopologySpec
    prefix: str = field(default_factory=random_prefix)
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    links: list[Link] = field(default_factory=list, init=False)
    _created: list[str] = field(default_factory=list, init=False, repr=False)
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        self.nodes = {n.name: Node(self, n, f"{self.prefix}-{n.name}") for n in self.spec.nodes}
        self.links = list(self.spec.links)

    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise TopologyError(f"no node {name!r} in topology {self.prefix}") from None

    def up(self) -> Topology:
        """Create namespaces, bridges and links; on any failure remove what was made, then re-raise."""
        if self._created:
            raise TopologyError(f"topology {self.prefix} is already up")
        try:
            for node in self.nodes.values():
                netns_exec.create_namespace(node.netns)
                self._created.append(node.netns)
                netns_exec.call_in(node.netns, _configure, node.spec, self.spec)
            with IPRoute() as ipr:
                for link in self.spec.links:
                    self._add_veth(ipr, link)
            for node in self.nodes.values():
                netns_exec.call_in(node.netns, _bring_up, node.name, self.spec.links_of(node.name))
        except BaseException:
            self.down()
            raise
        return self

    def _add_veth(self, ipr: IPRoute, link: Link) -> None:
        """Both ends are created straight in their namespaces: nothing passes through the host's."""
        ns_a, ns_b = self[link.a.node].netns, self[link.b.node].netns
        ipr.link("add", ifname=link.a.ifname, kind="veth", net_ns_fd=ns_a,
                 peer={"ifname": link.b.ifname, "net_ns_fd": ns_b})

    def add_link(self, a: str, b: str, ifname_a: str, ifname_b: str, *,
                 bridge_a: str | None = None, bridge_b: str | None = None) -> Link:
        """Plug a new veth pair between two running nodes (a neighbour appearing), both ends up."""
        link = Link(End(a, ifname_a, bridge_a), End(b, ifname_b, bridge_b))
        TopologySpec(self.spec.nodes, (*self.links, link))  # same checks as at build time
        with IPRoute() as ipr:
            self._add_veth(ipr, link)
        self.links.append(link)
        for end in (link.a, link.b):
            netns_exec.call_in(self[end.node].netns, _bring_up, end.node, [link])
        return link

    def remove_link(self, link: Link) -> None:
        """Unplug a link (deleting one veth end removes its peer too)."""
        if link not in self.links:
            raise TopologyError(f"link {link.a.node}/{link.a.ifname}-{link.b.node}/{link.b.ifname} is not in {self.prefix}")
        with self[link.a.node].iproute() as ipr:
            ipr.link("del", index=self[link.a.node].index(link.a.ifname))
        self.links.remove(link)

    def down(self) -> None:
        """End our processes, then remove our namespaces (their links go with them), newest first."""
        procs, self._processes = self._processes, []
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + 2
        for proc in procs:  # through Popen, so each keeps its real exit status
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        created, self._created = self._created, []
        errors: list[OSError] = []
        for name in reversed(created):
            try:
                netns_exec.remove_namespace(name)
            except OSError as exc:  # keep going: one stuck namespace must not strand the rest
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    def namespaces(self) -> list[str]:
        """The namespaces this topology made (and still owns)."""
        return list(self._created)


"""Declarative test topologies brought up: nodes are network namespaces, links are veth pairs.

A `TopologySpec` (lab.topology_spec: pure data, validated, no I/O) says what to build. A
`Topology` brings a spec up under a unique prefix (node `n1` lives in namespace `<prefix>-n1`;
acpd's own namespaces for that node can be `<prefix>-n1-dull` and are still caught by
`cleanup_stale(prefix)`), and removes all of it again, also when a test fails or `up()` stops
half way. Every spec name is re-exported here, so `from acp_openwrt.lab.topology import line`
keeps working.
"""
from __future__ import annotations

import contextlib
import inspect
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute

from acp_openwrt import netns as netns_exec
from acp_openwrt.lab.topology_spec import (
    ADDRGENMODES,
    BUILDERS,
    IFNAME_MAX,
    End,
    Link,
    NodeSpec,
    SpecBuilder,
    TopologyError,
    TopologySpec,
    check_ifname,
    check_prefix,
    from_edges,
    ifname_towards,
    line,
    mesh,
    named,
    random_prefix,
    ring,
    segment,
    star,
)
from acp_openwrt.netns import cleanup_stale

__all__ = [
    "ADDRGENMODES", "BUILDERS", "IFNAME_MAX", "End", "Link", "Node", "NodeSpec", "SpecBuilder",
    "Topology", "TopologyError", "TopologySpec", "check_ifname", "check_prefix", "cleanup_stale",
    "from_edges", "ifname_towards", "line", "mesh", "named", "random_prefix", "ring", "segment",
    "star",
]

IFA_F_NODAD = 0x02
NETLINK_ROUTE = 0
# pyroute2 >= 0.9
_IPROUTE_TAKES_SOCKET = "use_socket" in inspect.signature(IPRoute.__init__).parameters


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
        """Run a command inside the node and wait (output captured as text unless told
        otherwise)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(netns_exec.netns_argv(self.netns, argv), timeout=timeout,
                              check=check, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a daemon inside the node, in its own session; `down()` ends it, and whatever
        it left inside."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(netns_exec.netns_argv(self.netns, argv), **kwargs)
        self.topology._processes.append(proc)
        return proc

    def iproute(self) -> IPRoute:
        """A pyroute2 handle on this node's namespace, for the calling thread (use it in `with`).

        Its netlink socket is made inside the namespace on a worker thread; IPRoute(netns=...)
        would fork the interpreter instead (see netns_exec.create_namespace). pyroute2 0.9 takes
        that socket (use_socket=); 0.7 (OpenWrt 24.10) has no use_socket but opens its one
        socket in __init__, so there the whole IPRoute is built on the worker thread.
        """
        if not _IPROUTE_TAKES_SOCKET:
            return netns_exec.call_in(self.netns, IPRoute)
        return IPRoute(use_socket=netns_exec.socket_in(self.netns, socket.AF_NETLINK,
                                                        socket.SOCK_DGRAM, NETLINK_ROUTE))

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """Move the calling thread into this node for a block (see netns_exec.entered)."""
        return netns_exec.entered(self.netns)

    def socket(self, family: int = socket.AF_INET6, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> socket.socket:
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

    def add_address(self, ifname: str, address: str, prefixlen: int = 64,
                    dad: bool = False) -> None:
        """Give an interface a fixed address (e.g. fe80::1 with addrgenmode none), DAD skipped
        by default."""
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
        """Create namespaces, bridges and links; on any failure remove what was made, then
        re-raise."""
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
            raise TopologyError(f"link {link.a.node}/{link.a.ifname}-{link.b.node}/"
                                f"{link.b.ifname} is not in {self.prefix}")
        with self[link.a.node].iproute() as ipr:
            ipr.link("del", index=self[link.a.node].index(link.a.ifname))
        self.links.remove(link)

    def down(self) -> None:
        """End our processes, then remove our namespaces (their links go with them), newest
        first."""
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


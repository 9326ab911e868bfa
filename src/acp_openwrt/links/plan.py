"""Which host interfaces get a twin in the DULL namespace, and what to change to get there.

Pure: takes snapshots of the host's links and of the twins already in DULL, returns actions.
The netlink edge (links/netlink.py) takes the snapshots and carries the actions out, so a
restart, a missed netlink event or a crash half-way is healed by the next reconcile.

Choices (RFC 8994 §7 leaves L2 details to the implementation):
- A bridge with member ports gets ONE twin: a veth pair, one end enslaved to the bridge, the
  other in DULL named like the bridge. Not one per member port: a Linux bridge floods
  ff02::13 to every port, so per-port twins would all hear the same neighbours and build
  duplicate adjacencies and channels to each of them.
- Any other Ethernet-type interface (not a bridge, bond or team member) gets a macvlan
  (bridge mode) in DULL named like the host interface.
- Ignored: loopback, non-Ethernet links (tun, wireguard, xfrm...), dummies, bridge/bond/team
  members (their master is adopted), our own veth ends, names matching ignore_interfaces.
- A twin carries an alias `acp-twin <method> <host ifindex> <host name>`; a host veth end
  carries `acp-port <bridge ifindex>`. The aliases make twins findable after a restart.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

ARPHRD_ETHER = 1
TWIN_ALIAS = "acp-twin"
PORT_ALIAS = "acp-port"
Method = Literal["veth", "macvlan"]
_SKIP_KINDS = frozenset({"dummy", "xfrm", "vti", "vti6", "ip6tnl", "sit", "gre", "gretap",
                         "ip6gre", "ip6gretap", "ipip", "wireguard", "tun", "ifb", "nlmon",
                         "vxcan", "can", "bond_slave"})
_AGGREGATE_MASTERS = frozenset({"bond", "team"})


@dataclass(frozen=True)
class HostLink:
    """One link of the host namespace, as netlink reports it."""
    index: int
    name: str
    kind: str | None = None          # IFLA_INFO_KIND, None for physical devices
    link_type: int = ARPHRD_ETHER    # ifi_type
    master: int | None = None        # IFLA_MASTER
    alias: str | None = None
    loopback: bool = False


@dataclass(frozen=True)
class Twin:
    """A twin found in DULL (from its alias)."""
    dull_index: int
    dull_name: str
    method: Method
    host_index: int   # the adopted host link (the bridge, for a veth twin)
    host_name: str


@dataclass(frozen=True)
class Adopt:
    method: Method
    host_index: int
    host_name: str


@dataclass(frozen=True)
class Release:
    twin: Twin


@dataclass(frozen=True)
class RemoveStrayPort:
    """A host veth end of ours whose DULL end is gone or was never moved (crash mid-adoption)."""
    host_index: int
    host_name: str


Action = Adopt | Release | RemoveStrayPort


def twin_alias(method: Method, host_index: int, host_name: str) -> str:
    return f"{TWIN_ALIAS} {method} {host_index} {host_name}"


def port_alias(bridge_index: int) -> str:
    return f"{PORT_ALIAS} {bridge_index}"


def parse_twin_alias(alias: str | None) -> tuple[Method, int, str] | None:
    parts = (alias or "").split(" ")
    if len(parts) != 4 or parts[0] != TWIN_ALIAS or parts[1] not in ("veth", "macvlan"):
        return None
    if not parts[2].isdigit() or not parts[3]:
        return None
    return parts[1], int(parts[2]), parts[3]  # type: ignore[return-value]


def port_bridge(link: HostLink) -> int | None:
    """The bridge ifindex a host veth end of ours was made for; None if it is not ours."""
    parts = (link.alias or "").split(" ")
    if len(parts) == 2 and parts[0] == PORT_ALIAS and parts[1].isdigit():
        return int(parts[1])
    return None


def is_port_end(link: HostLink) -> bool:
    return port_bridge(link) is not None


_TEMP_NAME = re.compile(r"acp[bmt][0-9]+")


def ignored(name: str, patterns: Iterable[str]) -> bool:
    """Matches an ignore pattern, or is one of our names for a twin being made."""
    return bool(_TEMP_NAME.fullmatch(name)) or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def wanted(links: Iterable[HostLink], patterns: Iterable[str]) -> dict[int, Adopt]:
    """Host ifindex → how it should be adopted."""
    links = list(links)
    patterns = tuple(patterns)
    by_index = {link.index: link for link in links}
    out: dict[int, Adopt] = {}
    for link in links:
        if (link.loopback or link.link_type != ARPHRD_ETHER or link.kind in _SKIP_KINDS
                or is_port_end(link) or ignored(link.name, patterns)):
            continue
        master = by_index.get(link.master) if link.master is not None else None
        if master is not None:
            if master.kind == "bridge" and not ignored(master.name, patterns):
                out[master.index] = Adopt("veth", master.index, master.name)
            if master.kind in _AGGREGATE_MASTERS or master.kind == "bridge":
                continue
        if link.kind == "bridge":
            continue  # a bridge is adopted through its members (above)
        out[link.index] = Adopt("macvlan", link.index, link.name)
    return out


def plan(links: Iterable[HostLink], twins: Iterable[Twin], patterns: Iterable[str]) -> list[Action]:
    """Actions that make DULL hold exactly the wanted twins: releases first, then adoptions."""
    links = list(links)
    want = wanted(links, patterns)
    actions: list[Action] = []
    kept: set[int] = set()
    for twin in twins:
        goal = want.get(twin.host_index)
        if goal is not None and goal.method == twin.method and twin.host_index not in kept:
            kept.add(twin.host_index)
        else:
            actions.append(Release(twin))
    live_bridges = {i for i, goal in want.items() if goal.method == "veth" and i in kept}
    for link in links:
        if is_port_end(link):
            if port_bridge(link) not in live_bridges:
                actions.append(RemoveStrayPort(link.index, link.name))
    actions.extend(goal for i, goal in sorted(want.items()) if i not in kept)
    return actions

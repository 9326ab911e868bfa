"""This node's own report for the ACP map, from plain data (its identity, config roles, the
`rpl` status and its secure channels), and the seeds its RPL routes give. No I/O."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ..identity.address import AcpAddress, AddressError, Scheme
from ..identity.node_name import NodeNameError, parse_acp_node_name
from .core import MAX_NAME, NodeReport


def peer_address(node_name: str) -> str | None:
    """The ACP address an acp-node-name carries (a channel peer's certificate), else None."""
    try:
        name = parse_acp_node_name(node_name)
    except NodeNameError:
        return None
    if not name.has_address or name.acp_address is None:
        return None
    return str(ipaddress.IPv6Address(int(name.acp_address, 16)))


def rpl_state(rpl: Mapping[str, Any] | None) -> tuple[str, int | None]:
    """(state, rank) from the `rpl` answer: root, attached, detached or no-rpl."""
    if rpl is None or not rpl.get("running"):
        return "no-rpl", None
    rank = rpl.get("rank")
    rank = rank if isinstance(rank, int) else None
    role = rpl.get("role")
    if role in ("root", "floating-root"):
        return "root", rank
    if rank is not None and rpl.get("parents"):
        return "attached", rank
    return "detached", rank


def build_report(*, address: str, node_name: str | None, registrar: bool, root: bool,
                 rpl: Mapping[str, Any] | None, channels: Mapping[str, str]) -> NodeReport:
    """`channels` maps each up channel's ACP interface to the peer's ACP address: the RPL
    preferred parent (a link-local address on one of them) becomes the peer's ACP address."""
    state, rank = rpl_state(rpl)
    parent = None
    for entry in (rpl or {}).get("parents") or []:
        if isinstance(entry, Mapping) and entry.get("preferred"):
            parent = channels.get(str(entry.get("ifname")))
            break
    roles = []
    if registrar:
        roles.append("registrar")
    if root or state == "root":
        roles.append("root")
    return NodeReport(address=address, name=node_name[:MAX_NAME] if node_name else None,
                      roles=roles, state=state, rank=rank, parent=parent,
                      channels=sorted(set(channels.values()) - {address},
                                      key=ipaddress.IPv6Address))


def route_seeds(routes: Iterable[Any], own: str) -> list[str]:
    """ACP addresses of the nodes the RPL routes lead to: a route whose prefix is exactly a
    node's ACP prefix (its DAO target, §6.12.1.11) gives that node's address. On the root
    that is every node of the DODAG. ACP connect subnets (manual-scheme prefixes) and other
    ACPs' prefixes are no nodes."""
    domain = ipaddress.IPv6Network(f"{own}/48", strict=False)
    seeds = []
    for route in routes:
        if not isinstance(route, Mapping) or route.get("kind") != "unicast":
            continue
        try:
            prefix = ipaddress.IPv6Network(str(route.get("prefix")))
            acp = AcpAddress.decode(prefix.network_address)
        except (ValueError, AddressError):
            continue
        if acp.prefix == prefix and acp.scheme != Scheme.MANUAL and acp.address in domain \
                and str(acp.address) != own:
            seeds.append(str(acp.address))
    return sorted(set(seeds), key=ipaddress.IPv6Address)

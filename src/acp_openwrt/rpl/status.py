"""The RPL node's state as JSON-ready data (`acpctl rpl --json`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .of0 import dag_rank

if TYPE_CHECKING:
    from .dodag import RplNode


def describe(node: RplNode) -> dict[str, Any]:
    parents = [{"address": str(key[1]), "ifname": key[0], "preferred": i == 0,
                "rank": node.parent_rank(key)} for i, key in enumerate(node.parents)]
    children = [{"address": str(key[1]), "ifname": key[0], "targets": sorted(map(str, targets))}
                for key, targets in sorted(node.children().items(),
                                           key=lambda kv: (kv[0][0], int(kv[0][1])))]
    routes = sorted(node.routes(),
                    key=lambda r: (r.prefix.prefixlen, int(r.prefix.network_address)))
    minhop = node.dodag_config.min_hop_rank_increase
    return {
        "role": node.role,
        "address": str(node.config.address),
        "prefix": str(node.config.prefix),
        "rank": node.rank if node.attached else None,
        "dag_rank": dag_rank(node.rank, minhop) if node.attached else None,
        "dodag_id": str(node.dodag_id) if node.dodag_id is not None else None,
        "version": node.version if node.attached else None,
        "grounded": node.grounded,
        "mop": node.mop if node.attached else None,
        "preference": node.preference,
        "interfaces": node.interfaces,
        "neighbors": node.neighbor_count,
        "parents": parents,
        "children": children,
        "routes": [r.to_json() for r in routes],
        "counters": node.counters(),
    }

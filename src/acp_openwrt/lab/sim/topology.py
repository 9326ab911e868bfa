"""Topologies for the ACP simulation: node 0 is the registrar and DODAG root, every edge a
point-to-point DULL link (one AN_ACP neighbour each side, one secure channel).

- ``campus``: two core switches, distribution switches each uplinked to both cores, access
  switches each uplinked to a pair of distribution switches (redundant uplinks everywhere);
  about one distribution switch per 20 access switches.
- ``rings``: a ring of rings: a core ring of about sqrt(N) nodes, each core node closing a
  sub-ring of about sqrt(N) nodes through itself (metro access rings on a core ring).
- ``mesh``: a random connected mesh: each node links to a random earlier node (a random tree),
  then N/2 random extra links (average degree about 3).
- ``line``: a chain, node 0 at one end (the lab's 4-node line).
- ``lab-mesh10``: the 10-node mesh of bench/acp_formation.py (the guest's figures).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = ("campus", "rings", "mesh", "line", "lab-mesh10")

# bench/acp_formation.py's mesh10, n1..n10 as 0..9 (n1 is the registrar there too).
LAB_MESH10 = ((1, 2), (1, 3), (2, 4), (1, 5), (5, 6), (5, 7), (6, 8), (8, 9), (6, 10), (1, 8),
              (7, 10), (5, 8))


@dataclass(frozen=True)
class Topology:
    kind: str
    nodes: int
    edges: tuple[tuple[int, int], ...]

    def neighbours(self) -> list[list[int]]:
        adj: list[list[int]] = [[] for _ in range(self.nodes)]
        for a, b in self.edges:
            adj[a].append(b)
            adj[b].append(a)
        return adj

    def depth(self) -> int:
        """Hops from node 0 to the farthest node (breadth first)."""
        adj = self.neighbours()
        dist = {0: 0}
        frontier = [0]
        while frontier:
            nxt = []
            for a in frontier:
                for b in adj[a]:
                    if b not in dist:
                        dist[b] = dist[a] + 1
                        nxt.append(b)
            frontier = nxt
        if len(dist) != self.nodes:
            raise ValueError("topology is not connected")
        return max(dist.values())


def build(kind: str, nodes: int, rng: random.Random) -> Topology:
    if nodes < 2:
        raise ValueError("a topology needs at least 2 nodes")
    if kind == "campus":
        edges = _campus(nodes)
    elif kind == "rings":
        edges = _rings(nodes)
    elif kind == "mesh":
        edges = _mesh(nodes, rng)
    elif kind == "line":
        edges = [(i, i + 1) for i in range(nodes - 1)]
    elif kind == "lab-mesh10":
        if nodes != 10:
            raise ValueError("lab-mesh10 has 10 nodes")
        edges = [(a - 1, b - 1) for a, b in LAB_MESH10]
    else:
        raise ValueError(f"unknown topology {kind!r} (one of {', '.join(KINDS)})")
    unique = sorted({(min(a, b), max(a, b)) for a, b in edges if a != b})
    topo = Topology(kind, nodes, tuple(unique))
    topo.depth()  # raises if not connected
    return topo


def _campus(n: int) -> list[tuple[int, int]]:
    if n <= 3:
        return [(i, i + 1) for i in range(n - 1)]
    cores = [0, 1]
    edges = [(0, 1)]
    rest = n - 2
    n_dist = max(2, round(rest / 21))
    n_dist = min(n_dist, rest)
    dist = list(range(2, 2 + n_dist))
    for d in dist:
        edges += [(c, d) for c in cores]
    access = list(range(2 + n_dist, n))
    pairs = max(1, n_dist // 2)
    for i, a in enumerate(access):
        p = i % pairs
        first = dist[2 * p] if 2 * p < n_dist else dist[0]
        second = dist[2 * p + 1] if 2 * p + 1 < n_dist else dist[-1]
        edges.append((first, a))
        if second != first:
            edges.append((second, a))
    return edges


def _rings(n: int) -> list[tuple[int, int]]:
    if n <= 4:
        return [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(0, 1)]
    core = max(3, min(n, round(math.sqrt(n))))
    edges = [(i, (i + 1) % core) for i in range(core)]
    rest = list(range(core, n))
    # share the other nodes out over the core nodes, one sub-ring each (through its core node)
    per = [len(rest) // core + (1 if i < len(rest) % core else 0) for i in range(core)]
    start = 0
    for hub in range(core):
        ring = rest[start:start + per[hub]]
        start += per[hub]
        if not ring:
            continue
        chain = [hub, *ring, hub]
        edges += [(chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
    return edges


def _mesh(n: int, rng: random.Random) -> list[tuple[int, int]]:
    edges = [(rng.randrange(i), i) for i in range(1, n)]
    have = {(a, b) for a, b in edges}
    extra = n // 2
    tries = 0
    while extra > 0 and tries < 20 * n:
        tries += 1
        a, b = rng.randrange(n), rng.randrange(n)
        key = (min(a, b), max(a, b))
        if a == b or key in have:
            continue
        have.add(key)
        edges.append(key)
        extra -= 1
    return edges

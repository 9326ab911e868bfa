"""One simulation run: cold start to the full ACP, then a steady-state window; the figures.

Everything under a result's keys except ``run`` (wall time, the process's peak RSS) comes from
simulated time and the seeded RNG: the same arguments give the same figures.
"""
from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections import Counter
from typing import Any

from .net import Model, SimNet, deep_size
from .topology import build

STEADY_S = 600.0   # two DAO refreshes (lifetime 15 x 60 s, refreshed every third), ten DIO Imax
LIMIT_S = 3600.0   # give up on the cold start after this much simulated time
CHECK_S = 0.5      # how often the milestones are checked (their resolution)


def _per_min(counter: Counter[str], nodes: int, seconds: float) -> dict[str, float]:
    scale = 60.0 / seconds / nodes
    return {k: round(v * scale, 3) for k, v in sorted(counter.items()) if v}


def simulate(kind: str, nodes: int, seed: int, model: Model | None = None,
             steady_s: float = STEADY_S, limit_s: float = LIMIT_S,
             memory: bool = True) -> dict[str, Any]:
    import random

    model = model or Model()
    wall = time.perf_counter()
    topo = build(kind, nodes, random.Random(seed))
    net = SimNet(topo, model, seed)
    net.start()
    kernel = net.kernel
    milestones: dict[str, float | None] = {"enrolled_s": None, "channels_s": None,
                                           "formation_s": None}
    t = 0.0
    while t < limit_s:
        t += CHECK_S
        kernel.run_until(t)
        if milestones["enrolled_s"] is None and net.all_enrolled():
            milestones["enrolled_s"] = t
        if milestones["channels_s"] is None and milestones["enrolled_s"] is not None \
                and net.all_channels():
            milestones["channels_s"] = t
        if milestones["channels_s"] is not None and net.full_acp():
            milestones["formation_s"] = t
            break
    cold = Counter(net.counts)
    cold_root = Counter(net.root_counts)
    enrolments = sorted(net.enrolments)
    formed = milestones["formation_s"] is not None
    result: dict[str, Any] = {
        "topology": kind, "nodes": nodes, "links": len(topo.edges), "depth": topo.depth(),
        "seed": seed, "model": dataclasses.asdict(model), "formed": formed,
        "cold_start": {
            **milestones,
            "messages_per_node": round(sum(v for k, v in cold.items() if not k.startswith(
                ("ike_", "enrol_", "lost", "grasp_flood_originated", "asa_flood_originated",
                 "rpl_no_channel"))) / nodes, 1),
            "by_kind": dict(sorted(cold.items())),
            "root_received": dict(sorted(cold_root.items())),
            "enrolled_at_s": {str(n.index): round(n.enrolled_at, 2) for n in net.nodes
                              if n.enrolled_at is not None} if nodes <= 12 else None,
            "registrar_enrolments": len(enrolments),
            "enrolments_per_s_mean": _mean_rate(enrolments),
            "enrolments_per_s_peak": _peak_rate(enrolments),
            "registrar_busy_fraction": round(
                len(enrolments) * model.registrar_service_s / enrolments[-1], 3)
            if enrolments else None,
        },
    }
    if formed:
        result["steady"] = _steady(net, steady_s)
        result["routes"] = _routes(net)
        if memory:
            result["memory"] = _memory(net)
    result["run"] = {"wall_s": round(time.perf_counter() - wall, 2), "events": kernel.events,
                     "timer_spins": kernel.spins,
                     "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                         / 1024, 1)}
    return result


def _mean_rate(times: list[float]) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return round((len(times) - 1) / (times[-1] - times[0]), 3)


def _peak_rate(times: list[float]) -> int:
    bins = Counter(int(t) for t in times)
    return max(bins.values(), default=0)


def _steady(net: SimNet, seconds: float) -> dict[str, Any]:
    nodes = len(net.nodes)
    before, root_before = Counter(net.counts), Counter(net.root_counts)
    dao_bytes_before = net.dao_bytes_to_root
    relayed_before = sum(n.acp.counters.get("flood_relayed", 0) for n in net.nodes
                         if n.acp is not None)
    kernel = net.kernel
    kernel.run_until(kernel.now + seconds)
    diff = Counter(net.counts)
    diff.subtract(before)
    root = Counter(net.root_counts)
    root.subtract(root_before)
    relayed = sum(n.acp.counters.get("flood_relayed", 0) for n in net.nodes
                  if n.acp is not None) - relayed_before
    sent_kinds = {k: v for k, v in diff.items() if v > 0 and k.startswith(
        ("dull_", "rpl_dio", "rpl_dis", "rpl_dao", "grasp_flood", "asa_flood"))
        and not k.endswith(("_originated", "_originated_repeat", "_relayed"))}
    originated = diff["grasp_flood_originated"] + diff["grasp_flood_originated_repeat"] \
        + diff["asa_flood_originated"]
    flood_tx = diff["grasp_flood"] + diff["asa_flood"]
    return {
        "window_s": seconds,
        "messages_per_node_per_min": round(sum(sent_kinds.values()) * 60 / seconds / nodes, 2),
        "by_kind_per_node_per_min": _per_min(Counter(sent_kinds), nodes, seconds),
        "root_received_per_min": {k: round(v * 60 / seconds, 2) for k, v in sorted(root.items())
                                  if v > 0},
        "root_dao_bytes_per_min": round((net.dao_bytes_to_root - dao_bytes_before) * 60
                                        / seconds, 1),
        "floods_originated": originated,
        "flood_transmissions_per_originated": round(flood_tx / originated, 2)
        if originated else None,
        "flood_relays_per_originated": round(relayed / originated, 2) if originated else None,
        "full_acp_at_end": net.full_acp(),
        "lost": diff["lost"],
    }


def _routes(net: SimNet) -> dict[str, Any]:
    from ...rpl.routes import RouteKind

    counts = [sum(1 for r in n.rpl.routes() if r.kind is RouteKind.UNICAST)
              for n in net.nodes if n.rpl is not None]
    depths = [net.hops_to_root(n) for n in net.nodes[1:]]
    known = [d for d in depths if d is not None]
    return {"root": counts[0], "median": statistics.median(counts[1:]) if len(counts) > 1
            else 0, "max_non_root": max(counts[1:], default=0),
            "rpl_depth_median": statistics.median(known) if known else None,
            "rpl_depth_max": max(known, default=None)}


def _memory(net: SimNet) -> dict[str, Any]:
    sizes = [deep_size(n) for n in net.nodes]
    rest = sorted(sizes[1:])
    return {"root_bytes": sizes[0], "median_node_bytes": int(statistics.median(rest)),
            "max_non_root_bytes": rest[-1], "mean_bytes_per_node": int(sum(sizes) / len(sizes))}

"""The whole ACP forming from real acpd processes, timed, plus what it costs in memory.

Runs in the guest (secure channels need the guest kernel's ESP):
    acp-lab vm -- python3 bench/acp_formation.py [--mesh-size 10] [--seed 1] [--json PATH]

Scenarios, each a lab.acpd_lab.AcpdLab: node n1 is the registrar and DODAG root (started
first, as in a deployment: the MASA must know its domain CA); every other node starts with
only an IDevID and enrols through BRSKI, through a neighbour's join proxy if it is not next
to the registrar.
  line4    the 4-node line n1-n2-n3-n4
  line4-enrolled   the same line, every node holding its LDevID from the start (no BRSKI):
           what the ACP itself (channels, RPL) takes, against the same bare-IKE sum
  meshN    a seeded random connected mesh of N nodes: a tree of degree <= 3 plus N/3 extra
           links (loops), so some nodes have 2-3 channels and RPL has a choice of parents
Figures per scenario:
  started_s     launch of the pledges' acpd (two at a time) until every one answers its socket;
                launch_to_formation_s counts from the launch instead
  enrolled_s    all started -> every pledge holds an LDevID (enrolled_at_s: each pledge's)
  channels_s    all started -> every link's secure channel up on both ends
  formation_s   all started -> all-pairs reachability (ICMPv6 echo between every pair of
                ACP addresses, from the ACP namespaces)
  memory        per node, from /proc once formed: acpd RSS/PSS, its join proxy child's RSS
                (acpd + proxy is "the node"), charon's RSS reported apart
Bare IKE, same run: bench/channels.py's bare scenario (hand-written swanctl.conf, `swanctl
--initiate` on one side, to the first echo reply) once per hop of the line: 3 hops, summed.
  timeline      per node, from its stamped log (lab.timeline): answered, proxy_heard,
                enrol_start (the attempt that worked), enrolled, brski_s (the pledge's own BRSKI
                exchange), first_channel, rpl_joined; seconds after the last acpd answered
  hops          per hop of line4: the upstream node's first channel up (for n2: its own
                acpd answering) -> the pledge's LDevID stored, beside its brski_s
Targets: issue 9: line4 formation_s <= 2 x sum of the 3 bare hops; acpd+proxy RSS <= 40 MB.
Issue 19: line4 formation_s <= 2 x line4-enrolled formation_s (same run); each hop <= 2 x the
pledge's own BRSKI exchange time. line4_floor_s: what line4 would take with no wait but its
enrolments and first channels, which happen in series (the sum of the pledges' brski_s and of
the bare IKE hops); line4_floor_vs_enrolled_ratio sets it against the enrolled line.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.timeline import hop_figures, milestones
from acp_openwrt.lab.topology import TopologySpec, from_edges, line
from acp_openwrt.rpl.probe import EchoProber

RSS_TARGET_MB = 40.0
RATIO_TARGET = 2.0


def random_mesh(size: int, seed: int) -> TopologySpec:
    """A random tree (degree <= 3) plus size // 3 extra links: connected, with loops."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(1, size + 1)]
    degree = dict.fromkeys(names, 0)
    edges: list[tuple[str, str]] = []
    for i in range(1, size):
        parent = rng.choice([n for n in names[:i] if degree[n] < 3] or names[:i])
        edges.append((parent, names[i]))
        degree[parent] += 1
        degree[names[i]] += 1
    while len(edges) < size - 1 + size // 3:
        a, b = sorted(rng.sample(names, 2), key=names.index)
        if (a, b) not in edges and degree[a] < 4 and degree[b] < 4:
            edges.append((a, b))
            degree[a] += 1
            degree[b] += 1
    return from_edges(edges, names)


# ------------------------------------------------------------------------- memory
def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, comm, cmdline) for every process now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        table[int(entry.name)] = (ppid, comm, cmdline)
    return table


def _kib(pid: int, path: str, key: str) -> int:
    try:
        for line_ in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line_.startswith(key):
                return int(line_.split()[1])
    except OSError:
        pass
    return 0


def node_memory(acpd_pid: int, table: dict[int, tuple[int, str, str]]) -> dict[str, float]:
    """RSS (MB) of acpd, its join proxy and its charon: the processes under acpd's pid."""
    todo, below = [acpd_pid], []
    while todo:
        parent = todo.pop()
        kids = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        below += kids
        todo += kids
    proxy = sum(_kib(p, "status", "VmRSS:") for p in below  # started as entry (-S) since 5efbf5c
                if "brski.proxy.entry" in table[p][2] or "brski.proxy.process" in table[p][2])
    charon = sum(_kib(p, "status", "VmRSS:") for p in below if table[p][1] == "charon")
    # the registrar's worker lives while it enrols and 30 s after (issue 19): reported apart,
    # like charon, so that the figure of a node that formed a moment ago is not hidden
    worker = sum(_kib(p, "status", "VmRSS:") for p in below
                 if "brski.registrar.worker" in table[p][2])
    acpd = _kib(acpd_pid, "status", "VmRSS:")
    return {"acpd_rss_mb": round(acpd / 1024, 1),
            "acpd_pss_mb": round(_kib(acpd_pid, "smaps_rollup", "Pss:") / 1024, 1),
            "proxy_rss_mb": round(proxy / 1024, 1),
            "node_rss_mb": round((acpd + proxy) / 1024, 1),
            "charon_rss_mb": round(charon / 1024, 1),
            "registrar_worker_rss_mb": round(worker / 1024, 1)}


# ---------------------------------------------------------------------- formation
class Formation:
    """One scenario: bring the lab up, start everything, time the milestones, tear down."""

    def __init__(self, label: str, spec: TopologySpec, workdir: Path, limit: float,
                 enrolled: bool = False, logs: Path | None = None) -> None:
        self.label, self.spec, self.workdir, self.limit = label, spec, workdir, limit
        self.enrolled = enrolled  # every node starts with its LDevID: no BRSKI in the figure
        self.logs = logs  # where to copy each node's acpd log once formed (None: nowhere)
        self.names = [n.name for n in spec.nodes]
        self.degree = {n: sum(1 for lk in spec.links if n in (lk.a.node, lk.b.node))
                       for n in self.names}
        self.lab = AcpdLab(spec, workdir)
        self.probers: dict[str, EchoProber] = {}
        self.addresses: dict[str, str] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.names))

    def run(self) -> dict[str, Any]:
        lab, root, pledges = self.lab, self.names[0], self.names[1:]
        result: dict[str, Any] = {"scenario": self.label, "nodes": len(self.names),
                                  "links": len(self.spec.links),
                                  "edges": [[lk.a.node, lk.b.node] for lk in self.spec.links]}
        try:
            lab.up()
            if self.enrolled:
                lab.enrol(root, "option dodag_root '1'")
                for name in pledges:
                    lab.enrol(name)
                lab.start_all([root])
            else:
                lab.start_masa(root)
                lab.make_registrar(root, "option dodag_root '1'")
                for name in pledges:
                    lab.make_pledge(name)
                lab.start_all([root])
                lab.trust_registrar(root)
            answered = {root: time.time()}
            launch = time.monotonic()

            def start(name: str) -> None:
                lab.nodes[name].start(timeout=300)
                answered[name] = time.time()
            # Two at a time (the guest has 2 vCPUs): Python starting under TCG is slow, and
            # ten at once push each start (and the join proxies' hello) past its timeout.
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as starters:
                list(starters.map(start, pledges))
            t0, t0_wall = time.monotonic(), time.time()
            result["started_s"] = round(t0 - launch, 2)
            seen: dict[str, float] = {}

            def all_enrolled() -> bool:
                for name in pledges:
                    if name not in seen and lab.enrolled(name):
                        seen[name] = round(time.monotonic() - t0, 2)
                return len(seen) == len(pledges)
            self._wait("every pledge enrolled", all_enrolled)
            result["enrolled_s"] = round(time.monotonic() - t0, 2)
            result["enrolled_at_s"] = seen
            self._wait("every channel up",
                       lambda: all(lab.channels_up(n) >= self.degree[n] for n in self.names))
            result["channels_s"] = round(time.monotonic() - t0, 2)
            self.addresses = {n: lab.acp_address(n) for n in self.names}
            self._wait("all-pairs reachability", lambda: self.unreachable() == 0, interval=0.0)
            result["formation_s"] = round(time.monotonic() - t0, 2)
            result["launch_to_formation_s"] = round(time.monotonic() - launch, 2)
            self.timeline(result, answered, t0_wall)
            if self.logs is not None:
                lab.keep_logs(self.logs, self.label, self.names)
            time.sleep(1.0)
            table = _proc_table()
            result["memory"] = {n: node_memory(lab.nodes[n].proc.pid, table) for n in self.names}
        except BaseException:
            print(lab.logs()[-6000:], file=sys.stderr)
            if self.logs is not None:  # every node's log, for what the tail above leaves out
                with contextlib.suppress(Exception):
                    lab.keep_logs(self.logs, self.label, self.names)
            raise
        finally:
            for prober in self.probers.values():
                prober.close()
            self.pool.shutdown()
            lab.close()
        return result

    def timeline(self, result: dict[str, Any], answered: dict[str, float],
                 t0_wall: float) -> None:
        """Per node, from its stamped log: when it answered, heard a proxy, enrolled (and its
        own BRSKI exchange time), saw its first channel and its first RPL parent, in seconds
        after the last acpd answered; per hop of a line, the hop against the pledge's BRSKI."""
        day = datetime.date.today()
        marks = {}
        for name in self.names:
            log = self.lab.nodes[name].workdir / "acpd.stderr"
            marks[name] = milestones(log.read_text(errors="replace").splitlines(), day)
        result["timeline"] = {
            name: {"answered": round(answered[name] - t0_wall, 3),
                   **marks[name].relative(t0_wall)} for name in self.names}
        if not self.enrolled and self.label.startswith("line"):
            result["hops"] = hop_figures(self.names, marks, answered)

    def _wait(self, what: str, check: Any, interval: float = 0.2) -> None:
        start = time.monotonic()
        deadline = start + self.limit
        while True:
            try:
                if check():
                    print(f"{self.label}: {what} ({time.monotonic() - start:.1f} s more)",
                          file=sys.stderr, flush=True)
                    return
            except Exception:  # acpd busy, no address yet: not yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: {what} not within {self.limit:g} s")
            time.sleep(interval)

    def unreachable(self) -> int:
        def sweep(name: str) -> int:
            if name not in self.probers:
                self.probers[name] = EchoProber(self.lab.nodes[name].acp_ns, self.addresses[name])
            others = [a for n, a in self.addresses.items() if n != name]
            return len(others) - len(self.probers[name].sweep(others, 0.5))
        return sum(self.pool.map(sweep, self.names))


# ----------------------------------------------------------------------- bare IKE
def bare_hops(hops: int, workdir: Path) -> list[float]:
    """bench/channels.py's bare scenario once per hop (each hop a fresh pair of nodes)."""
    spec = importlib.util.spec_from_file_location("bench_channels",
                                                  Path(__file__).with_name("channels.py"))
    assert spec is not None and spec.loader is not None
    channels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(channels)
    times = []
    for i in range(hops):
        times.append(round(asyncio.run(channels.bare_run(workdir / f"bare{i}")), 2))
        print(f"bare IKE hop {i + 1}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def summarise(results: dict[str, Any]) -> None:
    bare = results["bare_ike_hops_s"]
    print("bare IKE per hop (swanctl --initiate -> first echo), 3 hops: "
          + " + ".join(f"{x:.2f}" for x in bare) + f" = {sum(bare):.2f} s")
    print(f"{'scenario':>14} {'nodes':>5} {'links':>5} {'started':>8} {'enrolled':>9} "
          f"{'channels':>9} {'formed':>7} {'from launch':>12}  (s after all acpd started)")
    for r in results["scenarios"]:
        if "error" in r:
            print(f"{r['scenario']:>14} {r['nodes']:>5} {r['links']:>5}  FAILED: {r['error']}")
            continue
        print(f"{r['scenario']:>14} {r['nodes']:>5} {r['links']:>5} {r['started_s']:>8} "
              f"{r['enrolled_s']:>9} {r['channels_s']:>9} {r['formation_s']:>7} "
              f"{r['launch_to_formation_s']:>12}")
    if "line4_ratio" in results:
        print(f"line4 formation / sum of bare hops: {results['line4_ratio']:.2f} "
              f"(target <= {RATIO_TARGET:g})")
    if "line4_enrolled_ratio" in results:
        print(f"line4-enrolled formation / sum of bare hops: "
              f"{results['line4_enrolled_ratio']:.2f}")
    if "line4_vs_enrolled_ratio" in results:
        print(f"line4 formation / line4-enrolled formation: "
              f"{results['line4_vs_enrolled_ratio']:.2f} (target <= {RATIO_TARGET:g})")
    if "line4_floor_s" in results:
        print(f"line4's floor (its pledges' BRSKI exchanges + the bare IKE hops, in series): "
              f"{results['line4_floor_s']:.2f} s, / line4-enrolled formation: "
              f"{results['line4_floor_vs_enrolled_ratio']:.2f}")
    for r in results["scenarios"]:
        for hop in r.get("hops", ()):
            print(f"{r['scenario']:>14} hop {hop['upstream']}->{hop['pledge']}: upstream channel "
                  f"up -> LDevID stored {hop['hop_s']} s, the pledge's BRSKI {hop['brski_s']} s, "
                  f"ratio {hop['ratio']} (target <= {RATIO_TARGET:g})")
    cols = ("answered", "proxy_heard", "enrol_start", "enrolled", "brski_s", "first_channel",
            "rpl_joined")
    print(f"{'scenario':>14} {'node':>5} " + " ".join(f"{c:>13}" for c in cols)
          + "  (s after the last acpd answered)")
    for r in results["scenarios"]:
        for name, t in r.get("timeline", {}).items():
            print(f"{r['scenario']:>14} {name:>5} " + " ".join(
                f"{'-' if t.get(c) is None else t[c]:>13}" for c in cols))
    print(f"{'scenario':>14} {'node':>5} {'acpd RSS':>9} {'acpd PSS':>9} {'proxy RSS':>10} "
          f"{'acpd+proxy':>11} {'charon RSS':>11} {'worker RSS':>11}  (MB; the registrar's "
          f"worker, alive while it enrols and 30 s after, apart)")
    for r in results["scenarios"]:
        for name, m in r.get("memory", {}).items():
            print(f"{r['scenario']:>14} {name:>5} {m['acpd_rss_mb']:>9} {m['acpd_pss_mb']:>9} "
                  f"{m['proxy_rss_mb']:>10} {m['node_rss_mb']:>11} {m['charon_rss_mb']:>11} "
                  f"{m.get('registrar_worker_rss_mb', 0.0):>11}")
    print(f"largest acpd+proxy RSS {results['max_node_rss_mb']} MB, largest acpd RSS "
          f"{results['max_acpd_rss_mb']} MB (target <= {RSS_TARGET_MB:g} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-size", type=int, default=10, help="0 skips the mesh")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per milestone")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    parser.add_argument("--logs", metavar="DIR", type=Path,
                        help="copy every node's acpd log here (<scenario>-<node>.log), e.g. "
                             "$ACP_LAB_OUT with `acp-lab vm --out DIR`")
    parser.add_argument("--only", metavar="SCENARIO", action="append",
                        help="run only these scenarios (line4, line4-enrolled, meshN)")
    args = parser.parse_args()
    if os.environ.get("ACP_LAB_GUEST") != "1":
        print("acp_formation: run it in the guest: acp-lab vm -- python3 bench/acp_formation.py",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="acpform") as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {"bare_ike_hops_s": bare_hops(3, work)}
        scenarios = [("line4", line(4), False), ("line4-enrolled", line(4), True)]
        if args.mesh_size:
            scenarios.append((f"mesh{args.mesh_size}", random_mesh(args.mesh_size, args.seed),
                              False))
        results["scenarios"] = []
        if args.only:
            scenarios = [s for s in scenarios if s[0] in args.only]
        for label, spec, enrolled in scenarios:
            try:
                done = Formation(label, spec, work / label, args.limit, enrolled,
                                 args.logs).run()
            except Exception as e:  # the other scenario's figures still count
                done = {"scenario": label, "nodes": len(spec.nodes), "links": len(spec.links),
                        "error": f"{type(e).__name__}: {e}"}
            print(f"{label}: {json.dumps(done)}", file=sys.stderr, flush=True)
            results["scenarios"].append(done)
    formed = [r for r in results["scenarios"] if "error" not in r]
    by_label = {r["scenario"]: r for r in results["scenarios"]}
    failed = {"error": "not run"}
    line4, enrolled4 = by_label.get("line4", failed), by_label.get("line4-enrolled", failed)
    if "error" not in line4:
        results["line4_ratio"] = round(line4["formation_s"] / sum(results["bare_ike_hops_s"]), 2)
    if "error" not in enrolled4:
        results["line4_enrolled_ratio"] = round(
            enrolled4["formation_s"] / sum(results["bare_ike_hops_s"]), 2)
    if "error" not in line4 and "error" not in enrolled4:  # issue 19: both in this run
        results["line4_vs_enrolled_ratio"] = round(
            line4["formation_s"] / max(enrolled4["formation_s"], 0.01), 2)
        # The floor under that ratio: the line's three enrolments happen one after the other,
        # and each pledge needs its own BRSKI exchange and then its first channel (one IKE hop)
        # before the next can start; with no other wait at all the line would still take the
        # sum of those, measured in this run (each pledge's brski_s, the bare IKE hops).
        brski = [h["brski_s"] for h in line4.get("hops", ()) if h.get("brski_s") is not None]
        if len(brski) == len(results["bare_ike_hops_s"]):
            floor = sum(brski) + sum(results["bare_ike_hops_s"])
            results["line4_floor_s"] = round(floor, 2)
            results["line4_floor_vs_enrolled_ratio"] = round(
                floor / max(enrolled4["formation_s"], 0.01), 2)
    hop_ratios = [h["ratio"] for h in line4.get("hops", ()) if h["ratio"] is not None]
    if hop_ratios:
        results["line4_worst_hop_ratio"] = max(hop_ratios)
    every = [m for r in formed for m in r["memory"].values()]
    if not every:
        print("acp_formation: no scenario formed", file=sys.stderr)
        return 1
    results["max_node_rss_mb"] = max(m["node_rss_mb"] for m in every)
    results["max_acpd_rss_mb"] = max(m["acpd_rss_mb"] for m in every)
    results["mean_node_rss_mb"] = round(statistics.mean(m["node_rss_mb"] for m in every), 1)
    results["max_charon_rss_mb"] = max(m["charon_rss_mb"] for m in every)
    results["mesh_seed"] = args.seed
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    summarise(results)
    return 0 if len(formed) == len(results["scenarios"]) else 1


if __name__ == "__main__":
    sys.exit(main())

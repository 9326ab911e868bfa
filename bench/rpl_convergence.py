#!/usr/bin/env python3
"""RPL convergence and memory in namespaces: 10, 25, 50 nodes, one process per node.

Each node is a namespace with its ACP address on loopback, linked by veths into a random
connected mesh with loops (seeded), and runs RplPart in its own Python process (so RSS is
per node, as on a router). The first node is the DODAG root. Measured:
- convergence: from "go" (every process ready, then each publishes ChannelUp for its links) to
  all-pairs reachability (ICMPv6 echo between every pair of ACP addresses, through the kernels);
- RSS and PSS of each node process once converged;
- healing: the preferred-parent link of the deepest node is set down; time to all-pairs again.
Targets (issue 6): 50 nodes within 10 s, healing within 3 s.

    sudo python3 bench/rpl_convergence.py [--sizes 10 25 50] [--fast] [--json [PATH]]
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acp_openwrt import events
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.client import request
from acp_openwrt.control.server import ControlServer
from acp_openwrt.identity.address import vlong_address, zone_address
from acp_openwrt.lab.topology import Topology, TopologySpec, from_edges
from acp_openwrt.node_context import NodeContext
from acp_openwrt.rpl.options import DodagConfiguration
from acp_openwrt.rpl.part import RplPart
from acp_openwrt.rpl.probe import EchoProber

RSUB = "bench.acp.example"
FAST = DodagConfiguration(dio_interval_min=6, dio_interval_doublings=6)


def acp_address(i: int) -> ipaddress.IPv6Address:
    if i % 2:
        return zone_address(RSUB, 3, i + 1).address
    return vlong_address(RSUB, 3, i + 1, v_bits=8).address


def random_mesh(size: int, rng: random.Random) -> TopologySpec:
    """A random tree with degree at most 4, plus size/2 extra edges (loops)."""
    names = [f"n{i}" for i in range(1, size + 1)]
    degree = {n: 0 for n in names}
    edges: set[tuple[str, str]] = set()
    for i in range(1, size):
        parent = rng.choice([n for n in names[:i] if degree[n] < 4] or names[:i])
        edges.add((parent, names[i]))
        degree[parent] += 1
        degree[names[i]] += 1
    while len(edges) < size - 1 + size // 2:
        a, b = rng.sample(names, 2)
        if (a, b) not in edges and (b, a) not in edges and degree[a] < 5 and degree[b] < 5:
            edges.add((a, b))
            degree[a] += 1
            degree[b] += 1
    return from_edges(sorted(edges, key=lambda e: (names.index(e[0]), names.index(e[1]))), names)


# ------------------------------------------------------------------ node process
async def run_node(args: argparse.Namespace) -> None:
    run = Path(args.run_dir)
    config = AcpConfig(dodag_root=args.root, namespace_acp=args.netns, run_dir=run, log_dir=run)
    control = ControlServer(run / "acpd.sock")
    ctx = NodeContext(config, events.EventBus(), control,
                      identity={"acp_address": args.address, "prefix_length": None})
    service = RplPart(ctx, dodag=FAST if args.fast else None)
    await control.start()
    await service.start()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    for ifname in args.ifaces.split(",") if args.ifaces else []:
        ctx.bus.publish(events.ChannelUp("", ifname, ifname, ""))
    await done.wait()
    await service.stop()
    await control.stop()


# ------------------------------------------------------------------------ driver
class Bench:
    def __init__(self, size: int, fast: bool, seed: int) -> None:
        self.spec = random_mesh(size, random.Random(seed))
        self.topo = Topology(self.spec)
        self.names = [n.name for n in self.spec.nodes]
        self.address = {n: acp_address(i) for i, n in enumerate(self.names)}
        self.fast = fast
        self.tmp = Path(tempfile.mkdtemp(prefix="rplbench"))
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.probers: dict[str, EchoProber] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def ifaces(self, name: str) -> list[str]:
        return sorted(lk.end_at(name).ifname for lk in self.topo.links
                      if name in (lk.a.node, lk.b.node))

    def unreachable(self, timeout: float = 0.5) -> int:
        def sweep(name: str) -> int:
            others = [self.address[o] for o in self.names if o != name]
            return len(others) - len(self.probers[name].sweep(others, timeout))
        return sum(self.pool.map(sweep, self.names))

    def wait_converged(self, limit: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.unreachable() == 0:
                return time.monotonic() - start
            time.sleep(0.05)
        return None

    def status(self, name: str) -> dict:
        return request(self.tmp / name / "acpd.sock", "rpl")  # type: ignore[no-any-return]

    def memory(self) -> dict[str, float]:
        rss, pss = [], []
        for proc in self.procs.values():
            with open(f"/proc/{proc.pid}/status") as fh:
                rss += [int(line.split()[1]) for line in fh if line.startswith("VmRSS:")]
            with open(f"/proc/{proc.pid}/smaps_rollup") as fh:
                pss += [int(line.split()[1]) for line in fh if line.startswith("Pss:")]
        return {"rss_mib_mean": round(sum(rss) / len(rss) / 1024, 1),
                "rss_mib_max": round(max(rss) / 1024, 1),
                "pss_mib_mean": round(sum(pss) / len(pss) / 1024, 1)}

    def run(self) -> dict:
        result: dict = {"nodes": len(self.names), "links": len(self.spec.links)}
        try:
            self.topo.up()
            for name in self.names:
                self.topo[name].add_address("lo", str(self.address[name]), 128)
                self.probers[name] = EchoProber(self.topo[name].netns, self.address[name])
            launch = time.monotonic()
            for i, name in enumerate(self.names):
                (self.tmp / name).mkdir()
                argv = [sys.executable, __file__, "--node", "--netns", self.topo[name].netns,
                        "--address", str(self.address[name]), "--run-dir", str(self.tmp / name),
                        "--ifaces", ",".join(self.ifaces(name))]
                argv += ["--root"] if i == 0 else []
                argv += ["--fast"] if self.fast else []
                self.procs[name] = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE, text=True)
            for proc in self.procs.values():
                if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a node process did not start")
            result["processes_ready_s"] = round(time.monotonic() - launch, 2)
            for proc in self.procs.values():
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            took = self.wait_converged(60.0)
            result["convergence_s"] = round(took, 2) if took is not None else None
            result.update(self.memory())
            if took is not None:
                result.update(self.heal())
        finally:
            result["tagged_routes_left"] = self.shutdown()
        return result

    def heal(self) -> dict:
        statuses = {n: self.status(n) for n in self.names}
        # The deepest node whose preferred-parent link is not the only way in (no bridge).
        for victim in sorted(self.names[1:], key=lambda n: -(statuses[n]["rank"] or 0)):
            ifname = statuses[victim]["parents"][0]["ifname"]
            if self.connected_without(victim, ifname):
                break
        else:
            return {"heal_s": None, "cut": "no link whose cut leaves the mesh connected"}
        self.topo[victim].set_link(ifname, False)
        took = self.wait_converged(30.0)
        return {"heal_s": round(took, 2) if took is not None else None,
                "cut": f"{victim}/{ifname}", "max_rank": statuses[victim]["rank"]}

    def connected_without(self, node: str, ifname: str) -> bool:
        links = [lk for lk in self.topo.links
                 if not (node in (lk.a.node, lk.b.node) and lk.end_at(node).ifname == ifname)]
        seen, todo = {self.names[0]}, [self.names[0]]
        while todo:
            at = todo.pop()
            for lk in links:
                if at in (lk.a.node, lk.b.node) and lk.other(at).node not in seen:
                    seen.add(lk.other(at).node)
                    todo.append(lk.other(at).node)
        return len(seen) == len(self.names)

    def shutdown(self) -> int:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        left = 0
        for name in self.names:
            if self.topo[name].netns in self.topo.namespaces():
                with self.topo[name].iproute() as ipr:
                    left += sum(1 for m in ipr.get_routes(family=socket.AF_INET6, table=254)
                                if m["proto"] == 155)
        for prober in self.probers.values():
            prober.close()
        self.pool.shutdown()
        self.topo.down()
        return left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--fast", action="store_true",
                        help="Imin 64 ms, Imax ~4 s instead of the profile's 128 ms / ~65 s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="JSON instead of the table; with PATH: the table, and JSON to PATH")
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--ifaces", help=argparse.SUPPRESS)
    parser.add_argument("--root", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        asyncio.run(run_node(args))
        return 0
    if os.geteuid() != 0:
        print("rpl_convergence: needs root (network namespaces)", file=sys.stderr)
        return 2
    results = [Bench(size, args.fast, args.seed).run() for size in args.sizes]
    if args.json and args.json != "-":
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.json == "-":
        print(json.dumps(results, indent=2))
    else:
        keys = ["nodes", "links", "processes_ready_s", "convergence_s", "heal_s",
                "rss_mib_mean", "rss_mib_max", "pss_mib_mean", "tagged_routes_left"]
        print("  ".join(f"{k:>18}" for k in keys))
        for r in results:
            print("  ".join(f"{str(r.get(k)):>18}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""BRSKI enrolment time in namespaces: pledge start (TCP connect to the registrar's link-local
address) to stored LDevID, median over N runs (default 10). Registrar and bench MASA run in one
namespace, the pledge in another, on a veth. Each run is a fresh pledge (new IDevID, new
Node-Number); the registrar stays up, as in a deployment. Needs root. Prints figures.

    python3 bench/brski_enrol.py [runs] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from acp_openwrt.brski.pledge.client import (
    IdentityPaths,
    Locator,
    PledgeClient,
    load_pledge_identity,
)
from acp_openwrt.brski.pledge.core import Enrolled
from acp_openwrt.lab.masa import Masa, start_bench_registrar
from acp_openwrt.lab.topology import Topology, cleanup_stale, line, random_prefix
from acp_openwrt.netns import socket_in


def listener(ns: str, address: str) -> socket.socket:
    sock = socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def measure(topo: Topology, address: str, folder: Path, runs: int) -> list[float]:
    registrar_node, pledge_node = topo["n1"], topo["n2"]
    masa = Masa.create(folder / "vendor")
    await masa.serve(sock=listener(registrar_node.netns, "::1"))
    bench = await start_bench_registrar(folder / "registrar", masa,
                                        sock=listener(registrar_node.netns, "::"),
                                        masa_namespace=registrar_node.netns)
    times: list[float] = []
    try:
        for run in range(runs):
            device = masa.issue_idevid(f"BENCH-{run:04d}")
            node = folder / f"node{run}"
            paths = IdentityPaths(device.cert_path, device.key_path, node / "ldevid.crt",
                                  node / "ldevid.key", node / "ta.pem")
            identity = load_pledge_identity(device.cert_path, device.key_path, masa.anchor_path)
            client = PledgeClient(identity, paths, namespace=pledge_node.netns)
            start = time.perf_counter()
            result = await client.attempt(Locator(address, bench.port, "eth0"))
            elapsed = time.perf_counter() - start
            if not isinstance(result, Enrolled) or not paths.ldevid_cert.exists():
                raise SystemExit(f"run {run} did not enrol: {result}")
            times.append(elapsed)
    finally:
        await bench.close()
        await masa.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=int, nargs="?", default=10)
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    runs = args.runs
    topo = Topology(line(2), random_prefix())
    try:
        topo.up()
        address = topo["n1"].link_local("eth0")  # pyroute2 runs its own loop: not inside ours
        topo["n2"].link_local("eth0")
        with tempfile.TemporaryDirectory() as folder:
            times = asyncio.run(measure(topo, address, Path(folder), runs))
    finally:
        topo.down()
        cleanup_stale(topo.prefix)
    median = statistics.median(times)
    print(f"BRSKI enrolment, pledge start -> stored LDevID, {runs} runs in namespaces")
    print(f"  median {median * 1000:.1f} ms   min {min(times) * 1000:.1f} ms   "
          f"max {max(times) * 1000:.1f} ms   "
          f"(target < 1000 ms: {'met' if median < 1 else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"runs": runs, "median_ms": round(median * 1000, 1),
             "min_ms": round(min(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1)},
            indent=2) + "\n")
    return 0 if median < 1 else 1


if __name__ == "__main__":
    sys.exit(main())

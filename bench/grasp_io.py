"""GRASP over real sockets between two namespaces on a veth (needs root). Prints figures; not a
test.

  flood intake   a sender process in n1 multicasts distinct M_FLOODs (loop count 1, distinct
                 session ids) at a fixed offered rate for --seconds; the GraspService in n2
                 (this process, per-neighbour rate limit lifted) counts the floods accepted into
                 its flood cache; this process's CPU time over the run is the receiver's CPU.
  negotiation    request -> one step -> end between GraspServices in n1 and n2 (ACP mode, one
                 event loop, TCP across the veth); median and p95 over --runs, from the
                 request_negotiate call to the accepted end_negotiate sent.

    python3 bench/grasp_io.py [--rates 10000,20000,30000,40000] [--seconds 3] [--runs 500]
                              [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.engine import EngineConfig
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.lab.topology import Topology, line
from acp_openwrt.netns import netns_argv

SRC = str(Path(__file__).resolve().parents[1] / "src")  # the sender process's PYTHONPATH
SENDER = r"""
import socket, sys, time
import cbor2
ifname, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
idx = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
dest = ("ff02::13", 7017, 0, idx)
init = bytes.fromhex("fd000000000000000000000000000001")
total = int(rate * seconds)
msgs = [cbor2.dumps([9, i + 1, init, 60000, [["EX1", 4, 1, ["Example 1 value=", 100]], []]])
        for i in range(total)]
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
start = time.perf_counter(); sent = 0
while sent < total:
    due = min(total, int((time.perf_counter() - start) * rate) + 1)
    while sent < due:
        try:
            s.sendto(msgs[sent], dest)
        except OSError:
            pass
        sent += 1
    time.sleep(0.0005)
print(sent, time.perf_counter() - start)
"""


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def flood_intake(topo: Topology, rate: int, seconds: float) -> dict[str, float]:
    cfg = EngineConfig(neighbour_rate=1e9, neighbour_burst=1e9, max_seen=1 << 20)
    recv = GraspService(namespace=topo["n2"].netns, mode="acp", address="fd00::2", config=cfg)
    await recv.start()
    try:
        await recv.add_interface(topo["n2"].ifname("n1"))
        env = dict(os.environ, PYTHONPATH=SRC)
        proc = await asyncio.create_subprocess_exec(
            *netns_argv(topo["n1"].netns, [sys.executable, "-c", SENDER, topo["n1"].ifname("n2"),
                                           str(rate), str(seconds)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert await proc.stdout.readline() == b"ready\n"  # type: ignore[union-attr]
        cpu0, t0 = cpu(), time.perf_counter()
        proc.stdin.write(b"go\n")  # type: ignore[union-attr]
        out = (await proc.stdout.readline()).split()  # type: ignore[union-attr]
        await asyncio.sleep(0.2)  # let the last datagrams in
        used, wall = cpu() - cpu0, time.perf_counter() - t0
        await proc.wait()
        sent, send_time = int(out[0]), float(out[1])
        accepted = recv.engine.counters.get("flood_accepted", 0)
        return {"offered": sent / send_time, "sent": sent, "accepted": accepted,
                "accepted_per_s": accepted / send_time, "cpu_share": used / wall,
                "cpu_us_per_flood": used / max(accepted, 1) * 1e6}
    finally:
        await recv.stop()


async def negotiation(topo: Topology, runs: int) -> list[float]:
    addr = {"n1": "fd00::1", "n2": "fd00::2"}
    svcs = {}
    for n in ("n1", "n2"):
        # ~4000 messages/s from one peer
        cfg = EngineConfig(neighbour_rate=1e9, neighbour_burst=1e9)
        svcs[n] = GraspService(namespace=topo[n].netns, mode="acp", address=addr[n], config=cfg)
        await svcs[n].start()
        await svcs[n].add_interface(topo[n].ifname("n1" if n == "n2" else "n2"))
    try:
        a, b = svcs["n1"].register_asa("buyer"), svcs["n2"].register_asa("seller")
        obj = Objective("EX3", c.F_NEG, 6, ["NZD", 410])
        peer = Locator(c.O_IPv6_LOCATOR, socket.inet_pton(socket.AF_INET6, addr["n2"]),
                       c.IPPROTO_TCP, 7017)

        async def seller() -> None:
            while True:
                req = await svcs["n2"].listen_negotiate(b, obj)
                await svcs["n2"].negotiate_step(b, req.handle, obj.with_value(["NZD", 300]))

        task = asyncio.create_task(seller())
        times = []
        for i in range(runs + 20):
            t0 = time.perf_counter()
            reply = await svcs["n1"].request_negotiate(a, obj, peer)
            svcs["n1"].end_negotiate(a, reply.handle, True)
            if i >= 20:  # warm-up
                times.append(time.perf_counter() - t0)
        task.cancel()
        return times
    finally:
        for svc in svcs.values():
            await svc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10000,20000,30000,40000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    topo = Topology(line(2)).up()
    try:
        topo["n1"].add_address("lo", "fd00::1", 128)
        topo["n2"].add_address("lo", "fd00::2", 128)
        ll = {n: topo[n].link_local(topo[n].ifname(p)) for n, p in (("n1", "n2"), ("n2", "n1"))}
        for here, there, dst in (("n1", "n2", "fd00::2/128"), ("n2", "n1", "fd00::1/128")):
            topo[here].run(["ip", "-6", "route", "add", dst, "via", ll[there],
                            "dev", topo[here].ifname(there)], check=True)
        print("flood intake across a veth (receiver: GraspService, one core)")
        floods = []
        for rate in (int(r) for r in args.rates.split(",")):
            f = asyncio.run(flood_intake(topo, rate, args.seconds))
            floods.append({"rate": rate, **{k: round(v, 3) for k, v in f.items()}})
            print(f"  offered {f['offered']:>8,.0f}/s  accepted {f['accepted_per_s']:>8,.0f}/s "
                  f"({f['accepted']}/{f['sent']}, loss {1 - f['accepted'] / f['sent']:.2%})  "
                  f"receiver CPU {f['cpu_share']:.0%}  {f['cpu_us_per_flood']:.1f} us/flood")
        times = asyncio.run(negotiation(topo, args.runs))
        q = statistics.quantiles(times, n=20)
        print(f"negotiation request -> step -> end, {len(times)} runs: median "
              f"{statistics.median(times) * 1e3:.3f} ms, p95 {q[18] * 1e3:.3f} ms")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"flood_intake": floods, "negotiation_runs": len(times),
                 "negotiation_median_ms": round(statistics.median(times) * 1e3, 3),
                 "negotiation_p95_ms": round(q[18] * 1e3, 3)}, indent=2) + "\n")
    finally:
        topo.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

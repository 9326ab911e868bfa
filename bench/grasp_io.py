"""GRASP over real sockets between two namespaces on a veth (needs root). Prints figures; not a
test. Every process below runs inside its namespace (`ip netns exec`), pinned to one CPU
(--cpus A,B: the sending/initiating side on A, the receiving/responding side on B; -1 for no
pinning), and, unless --no-rt, in the SCHED_FIFO class at priority 1 (inherited from this
process): the bench shares the machine with other jobs, and a process of theirs taking the CPU
from one of ours for a time slice made a negotiation's p95 several milliseconds and dropped
floods at a full socket, for GRASP and the baseline alike. The processes measured sleep
between messages, and the kernel's real-time throttling leaves others their share.

  flood intake   a sender process in n1 (CPU A) multicasts distinct M_FLOODs (loop count 1,
                 distinct session ids) at a fixed offered rate for --seconds; a receiver process
                 in n2 (CPU B: one GraspService, per-neighbour rate limit lifted, its other limits
                 the engine's defaults, a fresh process per rate) counts the floods accepted into
                 its flood cache, its CPU time over the run, its RSS (and peak RSS) at the end,
                 and the datagrams its namespace dropped for a full socket buffer.
  negotiation    request -> one step -> end, a new TCP connection each, between an initiator
                 process in n1 (CPU A) and a responder in n2 (CPU B), each one GraspService in
                 ACP mode with one ASA; timed in the initiator from the request_negotiate call to
                 the accepted end_negotiate sent. The baseline, in the same run: the same three
                 messages, byte for byte (made by the engine), between two plain Python
                 processes with blocking sockets in the same namespaces on the same CPUs
                 (bench/bare_negotiation.py: socket, connect, send, receive, send, close). The two
                 are measured interleaved: --rounds rounds of --runs/--rounds exchanges each,
                 the order alternating, after 20 warm-up exchanges each. Reported: medians, p95,
                 the ratio of the medians, p95/median, and the ratio per round (its spread).
                 Also, for continuity with earlier figures: both GraspServices in this one
                 process, one event loop.

    python3 bench/grasp_io.py [--rates 10000,20000,30000,40000] [--seconds 3] [--runs 500]
                              [--rounds 10] [--cpus 0,1] [--json PATH]
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
from typing import Any

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import NegotiationRequested, NegotiationStep, SendStream
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.lab.topology import Topology, line
from acp_openwrt.netns import netns_argv

BENCH = Path(__file__).resolve().parent
SRC = str(BENCH.parent / "src")  # the child processes' PYTHONPATH
ADDR = {"n1": "fd00::1", "n2": "fd00::2"}
BARE_PORT = 7018  # the baseline's responder (GRASP's listens on 7017 in the same namespace)
ASYNC_PORT = 7019  # the asyncio floor's responder (coroutine API)
CALLBACK_PORT = 7020  # the event loop alone (callbacks)
WARMUP = 20
SENDER = r"""
import os, socket, sys, time
import cbor2
ifname, rate, seconds, cpu = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
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
OBJECTIVE = Objective("EX3", c.F_NEG, 6, ["NZD", 410])
COUNTER = ["NZD", 300]  # the responder's step


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> dict[str, float]:
    """This process's VmRSS and VmHWM (peak), MB."""
    out = {}
    for row in Path("/proc/self/status").read_text().splitlines():
        key, _, value = row.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def rcvbuf_errors() -> int:
    """UDP datagrams this namespace dropped for a full socket buffer (the receiver too slow)."""
    for row in Path("/proc/self/net/snmp6").read_text().splitlines():
        if row.startswith("Udp6RcvbufErrors"):
            return int(row.split()[1])
    return 0


def pin(cpu_index: int) -> None:
    if cpu_index >= 0:
        os.sched_setaffinity(0, {cpu_index})


def no_limits(**kw: Any) -> EngineConfig:
    return EngineConfig(neighbour_rate=1e9, neighbour_burst=1e9, **kw)


def peer_locator(address: str) -> Locator:
    return Locator(c.O_IPv6_LOCATOR, socket.inet_pton(socket.AF_INET6, address), c.IPPROTO_TCP,
                   c.GRASP_LISTEN_PORT)


async def _stdin_lines() -> Any:
    loop = asyncio.get_running_loop()
    while True:
        text = await loop.run_in_executor(None, sys.stdin.readline)
        if not text:
            return
        yield text.strip()


# -- the child processes ----------------------------------------------------------------------
async def flood_receiver(ifname: str, max_seen: int) -> None:
    cfg = no_limits(max_seen=max_seen) if max_seen else no_limits()
    svc = GraspService(mode="acp", address=ADDR["n2"], config=cfg)
    await svc.start()
    await svc.add_interface(ifname)
    print("ready", flush=True)
    cpu0 = t0 = 0.0
    errors0 = 0
    async for cmd in _stdin_lines():
        if cmd == "start":
            cpu0, t0, errors0 = cpu(), time.perf_counter(), rcvbuf_errors()
        elif cmd == "report":
            used, wall = cpu() - cpu0, time.perf_counter() - t0
            mem = rss_mb()
            print(json.dumps({"accepted": svc.engine.counters.get("flood_accepted", 0),
                              "cpu_s": used, "wall_s": wall, "rss_mb": mem["VmRSS"],
                              "peak_rss_mb": mem["VmHWM"],
                              "socket_drops": rcvbuf_errors() - errors0}), flush=True)
    await svc.stop()


async def grasp_responder() -> None:
    svc = GraspService(mode="acp", address=ADDR["n2"], config=no_limits())
    await svc.start()
    asa = svc.register_asa("seller")

    async def seller() -> None:
        while True:
            req = await svc.listen_negotiate(asa, OBJECTIVE)
            await svc.negotiate_step(asa, req.handle, OBJECTIVE.with_value(COUNTER))

    task = asyncio.create_task(seller())
    print("ready", flush=True)
    async for _ in _stdin_lines():
        pass
    task.cancel()
    await svc.stop()


async def grasp_initiator() -> None:
    svc = GraspService(mode="acp", address=ADDR["n1"], config=no_limits())
    await svc.start()
    asa = svc.register_asa("buyer")
    peer = peer_locator(ADDR["n2"])
    print("ready", flush=True)
    async for cmd in _stdin_lines():
        times = []
        for _ in range(int(cmd)):
            t0 = time.perf_counter()
            reply = await svc.request_negotiate(asa, OBJECTIVE, peer)
            svc.end_negotiate(asa, reply.handle, True)
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)
    await svc.stop()


def child(role: str, cpu_index: int, ifname: str, max_seen: int = 0) -> int:
    pin(cpu_index)
    if role == "flood-receiver":
        asyncio.run(flood_receiver(ifname, max_seen))
    elif role == "grasp-responder":
        asyncio.run(grasp_responder())
    elif role == "grasp-initiator":
        asyncio.run(grasp_initiator())
    else:
        raise SystemExit(f"unknown role {role}")
    return 0


# -- the bench process ------------------------------------------------------------------------
class Child:
    """A process inside a namespace, driven by lines on its stdin and stdout."""

    def __init__(self, netns: str, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=SRC)
        self.proc = subprocess.Popen(netns_argv(netns, argv), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        if self.read() != "ready":
            raise RuntimeError(f"{argv[:4]} did not start")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, text: str) -> Any:
        self.send(text)
        return json.loads(self.read())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def grasp_child(netns: str, role: str, cpu_index: int, ifname: str = "",
                max_seen: int = 0) -> Child:
    return Child(netns, [sys.executable, __file__, "--role", role, "--cpu", str(cpu_index),
                         "--ifname", ifname, "--max-seen", str(max_seen)])


def flood_intake(topo: Topology, rate: int, seconds: float, cpus: tuple[int, int],
                 max_seen: int = 0) -> dict[str, float]:
    recv = grasp_child(topo["n2"].netns, "flood-receiver", cpus[1], topo["n2"].ifname("n1"),
                       max_seen)
    sender = None
    try:
        sender = Child(topo["n1"].netns, [sys.executable, "-c", SENDER, topo["n1"].ifname("n2"),
                                          str(rate), str(seconds), str(cpus[0])])
        recv.send("start")
        sender.send("go")
        out = sender.read().split()
        time.sleep(0.2)  # let the last datagrams in
        got = recv.ask("report")
    finally:
        if sender is not None:
            sender.close()
        recv.close()
    sent, send_time = int(out[0]), float(out[1])
    accepted = got["accepted"]
    return {"offered": sent / send_time, "sent": sent, "accepted": accepted,
            "accepted_per_s": accepted / send_time, "cpu_share": got["cpu_s"] / got["wall_s"],
            "cpu_us_per_flood": got["cpu_s"] / max(accepted, 1) * 1e6,
            "receiver_rss_mb": got["rss_mb"], "receiver_peak_rss_mb": got["peak_rss_mb"],
            "receiver_socket_drops": got["socket_drops"]}


def engine_messages() -> tuple[bytes, bytes, bytes]:
    """M_REQ_NEG, M_NEGOTIATE, M_END of one exchange as the GraspServices' engines write them
    (same addresses, objective and step; only the random session id differs per exchange)."""
    buyer = Engine(no_limits(address=socket.inet_pton(socket.AF_INET6, ADDR["n1"])))
    seller = Engine(no_limits(address=socket.inet_pton(socket.AF_INET6, ADDR["n2"])))
    seller.listen_negotiate(OBJECTIVE)

    def sent(outputs: list[Any]) -> bytes:
        return next(o.data for o in outputs if type(o) is SendStream)

    handle, out = buyer.request_negotiate(OBJECTIVE, peer_locator(ADDR["n2"]), 0.0, None, None)
    request = sent(out)
    conn, _ = seller.stream_accepted(socket.inet_pton(socket.AF_INET6, ADDR["n1"]), None, 0.0)
    asked = next(o for o in seller.receive_stream_message(conn, request, 0.0)
                 if type(o) is NegotiationRequested)
    negotiate = sent(seller.negotiate_step(asked.handle, OBJECTIVE.with_value(COUNTER), 0.0))
    conn_id = next(o.conn_id for o in out if type(o) is SendStream)
    step = next(o for o in buyer.receive_stream_message(conn_id, negotiate, 0.0)
                if type(o) is NegotiationStep)
    assert step.handle == handle
    return request, negotiate, sent(buyer.end_negotiate(handle, True, 0.0, None))


def stats(times: list[float]) -> dict[str, float]:
    median, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
    return {"median_ms": round(median * 1e3, 4), "p95_ms": round(p95 * 1e3, 4),
            "p95_over_median": round(p95 / median, 3)}


def negotiation(topo: Topology, runs: int, rounds: int, cpus: tuple[int, int]) -> dict[str, Any]:
    request, negotiate, end = engine_messages()
    n1, n2 = topo["n1"].netns, topo["n2"].netns
    bare = [sys.executable, str(BENCH / "bare_negotiation.py")]
    children: list[Child] = []
    try:
        children.append(grasp_child(n2, "grasp-responder", cpus[1]))
        initiators: dict[str, Child] = {}
        for name, prefix, port in (("bare", "", BARE_PORT), ("asyncio", "async-", ASYNC_PORT),
                                   ("loop", "callback-", CALLBACK_PORT)):
            children.append(Child(n2, [*bare, f"{prefix}responder", str(port), str(cpus[1]),
                                       negotiate.hex(), str(len(request)), str(len(end))]))
            initiators[name] = Child(n1, [*bare, f"{prefix}initiator", ADDR["n2"], str(port),
                                          str(cpus[0]), request.hex(), end.hex(),
                                          str(len(negotiate))])
            children.append(initiators[name])
        initiators["grasp"] = grasp_child(n1, "grasp-initiator", cpus[0])
        children.append(initiators["grasp"])
        for proc in initiators.values():
            proc.ask(str(WARMUP))
        per = max(1, runs // rounds)
        times: dict[str, list[float]] = {name: [] for name in initiators}
        ratios, floor_ratios, loop_ratios = [], [], []
        names = list(initiators)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # each goes first in turn
            got = {name: initiators[name].ask(str(per)) for name in order}
            for name, t in got.items():
                times[name] += t
            ratios.append(statistics.median(got["grasp"]) / statistics.median(got["bare"]))
            floor_ratios.append(statistics.median(got["asyncio"])
                                / statistics.median(got["bare"]))
            loop_ratios.append(statistics.median(got["loop"]) / statistics.median(got["bare"]))
    finally:
        for proc in reversed(children):
            proc.close()
    g, b, a = stats(times["grasp"]), stats(times["bare"]), stats(times["asyncio"])
    lo = stats(times["loop"])
    return {"runs": len(times["grasp"]), "rounds": rounds, "cpus": list(cpus),
            "message_bytes": [len(request), len(negotiate), len(end)],
            "grasp": g, "bare": b, "asyncio_floor": a, "event_loop_alone": lo,
            "ratio": round(g["median_ms"] / b["median_ms"], 3),
            "ratio_per_round": [round(x, 3) for x in ratios],
            "floor_ratio": round(a["median_ms"] / b["median_ms"], 3),
            "floor_ratio_per_round": [round(x, 3) for x in floor_ratios],
            "loop_ratio": round(lo["median_ms"] / b["median_ms"], 3),
            "loop_ratio_per_round": [round(x, 3) for x in loop_ratios],
            "ratio_to_floor": round(g["median_ms"] / a["median_ms"], 3)}


async def negotiation_one_process(topo: Topology, runs: int) -> list[float]:
    """Both GraspServices in this process, one event loop (the figure before the baseline)."""
    svcs = {n: GraspService(namespace=topo[n].netns, mode="acp", address=ADDR[n],
                            config=no_limits()) for n in ("n1", "n2")}
    for svc in svcs.values():
        await svc.start()
    try:
        a, b = svcs["n1"].register_asa("buyer"), svcs["n2"].register_asa("seller")

        async def seller() -> None:
            while True:
                req = await svcs["n2"].listen_negotiate(b, OBJECTIVE)
                await svcs["n2"].negotiate_step(b, req.handle, OBJECTIVE.with_value(COUNTER))

        task = asyncio.create_task(seller())
        times = []
        for i in range(runs + WARMUP):
            t0 = time.perf_counter()
            reply = await svcs["n1"].request_negotiate(a, OBJECTIVE, peer_locator(ADDR["n2"]))
            svcs["n1"].end_negotiate(a, reply.handle, True)
            if i >= WARMUP:
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
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cpus", default="0,1",
                        help="CPU of the sender/initiator, of the receiver/responder (-1: any)")
    parser.add_argument("--skip-floods", action="store_true", help="negotiation figures only")
    parser.add_argument("--no-rt", action="store_true",
                        help="run the processes in the normal scheduling class")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    parser.add_argument("--role", help=argparse.SUPPRESS)  # a child process of this bench
    parser.add_argument("--cpu", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--ifname", default="", help=argparse.SUPPRESS)
    parser.add_argument("--max-seen", type=int, default=0,
                        help="the flood receiver's seen-pair cache (0: the engine's default)")
    args = parser.parse_args()
    if args.role:
        return child(args.role, args.cpu, args.ifname, args.max_seen)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    a, b = (int(x) for x in args.cpus.split(","))
    cpus = (a, b)
    if not args.no_rt:  # the children inherit it
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    sched = "normal" if args.no_rt else "SCHED_FIFO 1"
    topo = Topology(line(2)).up()
    try:
        topo["n1"].add_address("lo", ADDR["n1"], 128)
        topo["n2"].add_address("lo", ADDR["n2"], 128)
        ll = {n: topo[n].link_local(topo[n].ifname(p)) for n, p in (("n1", "n2"), ("n2", "n1"))}
        for here, there, dst in (("n1", "n2", "fd00::2/128"), ("n2", "n1", "fd00::1/128")):
            topo[here].run(["ip", "-6", "route", "add", dst, "via", ll[there],
                            "dev", topo[here].ifname(there)], check=True)
        floods = []
        if not args.skip_floods:
            print(f"flood intake across a veth (receiver: one GraspService process, CPU {b}, "
                  f"{sched})")
            for rate in (int(r) for r in args.rates.split(",")):
                f = flood_intake(topo, rate, args.seconds, cpus, args.max_seen)
                floods.append({"rate": rate, **{k: round(v, 3) for k, v in f.items()}})
                print(f"  offered {f['offered']:>8,.0f}/s  accepted {f['accepted_per_s']:>8,.0f}/s"
                      f" ({f['accepted']}/{f['sent']}, loss {1 - f['accepted'] / f['sent']:.2%})"
                      f"  receiver CPU {f['cpu_share']:.0%}  {f['cpu_us_per_flood']:.1f} us/flood"
                      f"  RSS {f['receiver_rss_mb']:.1f} MB at the end"
                      + (f"  ({f['receiver_socket_drops']:.0f} dropped at its full socket)"
                         if f["receiver_socket_drops"] else ""))
        neg = negotiation(topo, args.runs, args.rounds, cpus)
        g, bare = neg["grasp"], neg["bare"]
        print(f"negotiation request -> step -> end, new TCP connection each, {neg['runs']} runs "
              f"each in {neg['rounds']} interleaved rounds, CPUs {a} -> {b}, {sched}, messages "
              f"{'+'.join(map(str, neg['message_bytes']))} bytes:")
        floor = neg["asyncio_floor"]
        rows = (("bare sockets", bare), ("asyncio, callbacks", neg["event_loop_alone"]),
                ("asyncio + await", floor), ("GRASP", g))
        for name, s in rows:
            print(f"  {name:<18} median {s['median_ms']:.3f} ms  p95 {s['p95_ms']:.3f} ms  "
                  f"p95/median {s['p95_over_median']:.2f}")
        per = neg["ratio_per_round"]
        print(f"  ratio GRASP/bare {neg['ratio']:.2f} (per round {min(per):.2f}-{max(per):.2f})")
        fper = neg["floor_ratio_per_round"]
        lper = neg["loop_ratio_per_round"]
        print(f"  no GRASP code, against bare: asyncio with callbacks only {neg['loop_ratio']:.2f}"
              f" (per round {min(lper):.2f}-{max(lper):.2f}), asyncio with an awaited API "
              f"{neg['floor_ratio']:.2f} ({min(fper):.2f}-{max(fper):.2f}); "
              f"GRASP against the latter {neg['ratio_to_floor']:.2f}")
        one = asyncio.run(negotiation_one_process(topo, args.runs))
        one_stats = stats(one)
        print(f"  both GraspServices in one process: median {one_stats['median_ms']:.3f} ms, "
              f"p95 {one_stats['p95_ms']:.3f} ms")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"scheduling": sched, "flood_intake": floods, "negotiation": neg,
                 "negotiation_runs": neg["runs"],
                 "negotiation_median_ms": g["median_ms"], "negotiation_p95_ms": g["p95_ms"],
                 "bare_median_ms": bare["median_ms"], "bare_p95_ms": bare["p95_ms"],
                 "negotiation_ratio": neg["ratio"],
                 "asyncio_floor_median_ms": floor["median_ms"],
                 "asyncio_floor_ratio": neg["floor_ratio"],
                 "event_loop_alone_median_ms": neg["event_loop_alone"]["median_ms"],
                 "event_loop_alone_ratio": neg["loop_ratio"],
                 "negotiation_ratio_to_floor": neg["ratio_to_floor"],
                 "negotiation_p95_over_median": g["p95_over_median"],
                 "negotiation_one_process": one_stats}, indent=2) + "\n")
    finally:
        topo.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GRASP under a sustained flood at the default limits: memory stays bounded. Prints figures;
not a test.

Every flood is well-formed and new: its own session id, initiator and source address
(link-local, so DULL takes it), objective name and locator, so no duplicate check, rate limit
per neighbour or cache overwrite lets the receiver off. The receiver runs EngineConfig()'s
defaults (flood cache 1024, seen floods 16384, 500 msg/s per neighbour, 4096 neighbours).

  engine    the sans-I/O engine (DULL mode) fed such floods as fast as this process makes and
            decodes them, for --seconds; RSS sampled every second.
  service   (root) a GraspService (DULL mode) in namespace n2, this process, fed over a veth
            by a sender process in n1 at full rate: one UDP socket, IPV6_FREEBIND, the source
            set per datagram (IPV6_PKTINFO) to one of --sources fakes.

For each: RSS before, at half time, at the end and the peak (MB), floods accepted, and every
cache's size at the end (Engine.cache_sizes()). Bounded memory shows as no growth over the
second half, once the caches are full.

    python3 bench/grasp_flood_memory.py [--seconds 20] [--sources 65536] [--value-bytes 32]
                                        [--only engine|service] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2

from acp_openwrt.grasp.engine import Engine, EngineConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")  # the sender process's PYTHONPATH
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SID_FIRST = 1 << 24  # session ids from here encode as 0x1a + 4 bytes: fixed offsets


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# One flood template, patched in place per datagram (sender and engine phase alike): session id,
# the source address (initiator and locator), the objective name's 8 hex digits, the port.
TEMPLATE = r"""
import struct
import cbor2

MARK = bytes(range(0xA0, 0xB0))


def template(value_bytes):
    data = bytearray(cbor2.dumps([9, 0x7EADBEEF, MARK, 60000,
                                  [["F-00000000", 4, 1, "v" * value_bytes],
                                   [103, MARK, 6, 0xBEEF]]]))
    sid_at = data.index(struct.pack(">I", 0x7EADBEEF))
    first = data.index(MARK)
    name_at = data.index(b"F-00000000") + 2
    port_at = data.index(b"\x19\xbe\xef") + 1
    return data, sid_at, (first, data.index(MARK, first + 1)), name_at, port_at


def patch(data, at, n, source):
    sid_at, addr_at, name_at, port_at = at
    struct.pack_into(">I", data, sid_at, (1 << 24) + n)
    for a in addr_at:
        data[a:a + 16] = source
    data[name_at:name_at + 8] = b"%08x" % n
    struct.pack_into(">H", data, port_at, 1024 + n % 60000)
"""
_ns: dict[str, Any] = {}
exec(TEMPLATE, _ns)


def fake(n: int, sources: int) -> bytes:
    """Spoofed source number n: fe80::a:1, fe80::a:2, ... (``sources`` of them, cycled)."""
    return (0xFE80 << 112 | 0xA0000 + 1 + n % sources).to_bytes(16, "big")


def engine_phase(seconds: float, sources: int, value_bytes: int) -> dict[str, Any]:
    engine = Engine(EngineConfig(dull=True), random.SystemRandom())
    engine.add_interface("eth0", bytes.fromhex("fe80" + "00" * 13 + "01"))
    data, sid_at, addr_at, name_at, port_at = _ns["template"](value_bytes)
    at = (sid_at, addr_at, name_at, port_at)
    cbor2.loads(bytes(data))  # the template is well-formed
    samples = []
    before = rss_mb()
    t0 = time.perf_counter()
    cpu0 = cpu_s()
    n = 0
    next_sample = t0 + 1.0
    receive = engine.receive_datagram
    while True:
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((round(now - t0, 1), n, round(rss_mb(), 2)))
            next_sample += 1.0
            engine.handle_timer(now - t0)  # the service's housekeeping tick
            if now - t0 >= seconds:
                break
        for _ in range(256):
            src = fake(n, sources)
            _ns["patch"](data, at, n, src)
            receive("eth0", src, bytes(data), now - t0)  # returns its outputs (dropped here)
            n += 1
    elapsed = time.perf_counter() - t0
    return summarise("engine (sans-I/O, DULL)", before, samples, engine, n, elapsed,
                     cpu_s() - cpu0)


SENDER = TEMPLATE + r"""
import socket, sys, time
ifname, seconds = sys.argv[1], float(sys.argv[2])
sources, value_bytes = int(sys.argv[3]), int(sys.argv[4])
index = socket.if_nametoindex(ifname)
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND: send from addresses we do not have
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
dest = ("ff02::13", 7017, 0, index)
tail = struct.pack("@I", index)
fakes = [(0xFE80 << 112 | 0xA0000 + 1 + k).to_bytes(16, "big") for k in range(sources)]
data, sid_at, addr_at, name_at, port_at = template(value_bytes)
at = (sid_at, addr_at, name_at, port_at)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
t0 = time.perf_counter(); n = errors = 0
while time.perf_counter() - t0 < seconds:
    for _ in range(256):
        src = fakes[n % sources]
        patch(data, at, n, src)
        try:
            sock.sendmsg([data], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, src + tail)], 0, dest)
        except OSError:
            errors += 1
        n += 1
print(n, errors, time.perf_counter() - t0, flush=True)
"""


def service_phase(seconds: float, sources: int, value_bytes: int) -> dict[str, Any]:
    from acp_openwrt.lab.topology import Topology, line

    topo = Topology(line(2)).up()  # pyroute2 runs its own loop: outside ours
    try:
        return asyncio.run(_service_flood(topo, seconds, sources, value_bytes))
    finally:
        topo.down()


async def _service_flood(topo: Any, seconds: float, sources: int,
                         value_bytes: int) -> dict[str, Any]:
    from acp_openwrt.grasp.service import GraspService
    from acp_openwrt.netns import netns_argv

    recv = None
    try:
        recv = GraspService(namespace=topo["n2"].netns, mode="dull")  # EngineConfig() defaults
        await recv.start()
        await recv.add_interface(topo["n2"].ifname("n1"))
        env = dict(os.environ, PYTHONPATH=SRC)
        proc = await asyncio.create_subprocess_exec(
            *netns_argv(topo["n1"].netns, [sys.executable, "-c", SENDER, topo["n1"].ifname("n2"),
                                           str(seconds), str(sources), str(value_bytes)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert await proc.stdout.readline() == b"ready\n"  # type: ignore[union-attr]
        samples = []
        before = rss_mb()
        cpu0, t0 = cpu_s(), time.perf_counter()
        proc.stdin.write(b"go\n")  # type: ignore[union-attr]
        reply = asyncio.ensure_future(proc.stdout.readline())  # type: ignore[union-attr]
        while not reply.done():
            await asyncio.wait([reply], timeout=1.0)
            samples.append((round(time.perf_counter() - t0, 1),
                            recv.engine.counters.get("flood_accepted", 0), round(rss_mb(), 2)))
        await asyncio.sleep(0.3)  # the last datagrams in
        elapsed = time.perf_counter() - t0
        used = cpu_s() - cpu0
        sent, errors, send_s = reply.result().split()
        await proc.wait()
        out = summarise("service over a veth (GraspService, DULL)", before, samples, recv.engine,
                        int(sent) - int(errors), elapsed, used)
        out["sender_per_s"] = round((int(sent) - int(errors)) / float(send_s))
        out["udp_received"] = sum(u.received for u in recv._udp.values())
        return out
    finally:
        if recv is not None:
            await recv.stop()


def summarise(label: str, before: float, samples: list[tuple[float, int, float]], engine: Engine,
              offered: int, elapsed: float, cpu: float) -> dict[str, Any]:
    half = samples[len(samples) // 2]
    accepted = engine.counters.get("flood_accepted", 0)
    return {
        "phase": label,
        "seconds": round(elapsed, 1),
        "offered": offered,
        "accepted": accepted,
        "accepted_per_s": round(accepted / elapsed),
        "cpu_share": round(cpu / elapsed, 2),
        "rss_before_mb": round(before, 2),
        "rss_half_mb": half[2],
        "rss_after_mb": samples[-1][2],
        "rss_peak_mb": max(s[2] for s in samples),
        "rss_growth_second_half_mb": round(samples[-1][2] - half[2], 2),
        "caches": engine.cache_sizes(),
        "limits": {"flood_cache": engine.config.max_flood_entries,
                   "seen_floods": engine.config.max_seen, "neighbour_buckets": 4096},
        "counters": dict(engine.counters),
        "samples": samples,
    }


def show(f: dict[str, Any]) -> None:
    print(f"{f['phase']}: {f['seconds']} s, {f['accepted']:,} floods accepted "
          f"({f['accepted_per_s']:,}/s, CPU {f['cpu_share']:.0%}), offered {f['offered']:,}")
    print(f"  RSS before {f['rss_before_mb']:.1f} MB, at half time {f['rss_half_mb']:.1f} MB, "
          f"after {f['rss_after_mb']:.1f} MB, peak {f['rss_peak_mb']:.1f} MB "
          f"(second half: {f['rss_growth_second_half_mb']:+.2f} MB)")
    print("  caches at the end: " + ", ".join(f"{k} {v}" for k, v in f["caches"].items() if v)
          + f"  (limits: {', '.join(f'{k} {v}' for k, v in f['limits'].items())})")
    print("  RSS over time (s, floods, MB): "
          + "  ".join(f"{t:g}:{n}:{m:.1f}" for t, n, m in f["samples"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sources", type=int, default=65536, help="spoofed link-local sources")
    parser.add_argument("--value-bytes", type=int, default=32, help="objective value length")
    parser.add_argument("--only", choices=("engine", "service"))
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    figures: dict[str, Any] = {"sources": args.sources, "value_bytes": args.value_bytes}
    if args.only != "service":
        figures["engine"] = engine_phase(args.seconds, args.sources, args.value_bytes)
        show(figures["engine"])
    if args.only != "engine":
        if os.geteuid() != 0:
            print("service phase: needs root (network namespaces); skipped", file=sys.stderr)
        else:
            figures["service"] = service_phase(args.seconds, args.sources, args.value_bytes)
            show(figures["service"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

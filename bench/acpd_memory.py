"""acpd's memory: RSS and PSS idle (no interfaces) and with N adopted interfaces.

Run as root: python3 bench/acpd_memory.py [N] [--json PATH]. Prints figures; exits 0. Budget (issue 4):
the whole node within 40 MB RSS on x86-64.
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

from pyroute2 import IPRoute

from acp_openwrt.lab.acpd_runner import AcpdNode, wait_for
from acp_openwrt.netns import call_in, create_namespace, list_namespaces, remove_namespace


def memory(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


def add_links(host: str, wire: str, n: int) -> None:
    def make() -> None:
        with IPRoute() as ipr:
            for i in range(n):
                ipr.link("add", ifname=f"eth{i}", kind="veth", peer={"ifname": f"w{i}"})
                ipr.link("set", index=ipr.link_lookup(ifname=f"w{i}")[0], net_ns_fd=f"/run/netns/{wire}")
                ipr.link("set", index=ipr.link_lookup(ifname=f"eth{i}")[0], state="up")
    call_in(host, make)

    def up() -> None:
        with IPRoute() as ipr:
            for i in range(n):
                ipr.link("set", index=ipr.link_lookup(ifname=f"w{i}")[0], state="up")
    call_in(wire, up)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=20)
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    n = args.n
    tag = "m" + secrets.token_hex(3)
    host, wire = f"{tag}-host", f"{tag}-wire"
    create_namespace(host)
    create_namespace(wire)
    node = AcpdNode(tag, host, Path(tempfile.mkdtemp(prefix="acpd-mem-")))
    results = {}
    try:
        node.start()
        time.sleep(1.0)
        results["idle"] = memory(node.proc.pid)
        t0 = time.monotonic()
        add_links(host, wire, n)
        wait_for(lambda: len([e for e in node.ask("interfaces") if e["link_local"]]) == n,
                 timeout=60, what=f"{n} adopted")
        results[f"adopt_{n}_s"] = round(time.monotonic() - t0, 2)
        time.sleep(0.5)
        results[f"with_{n}_interfaces"] = memory(node.proc.pid)
        node.stop()
    finally:
        node.stop()
        for ns in (host, wire, node.dull_ns, node.acp_ns):
            if ns in list_namespaces():
                remove_namespace(ns)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

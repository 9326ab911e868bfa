"""acpd's memory on a fully running enrolled node: RSS and PSS of acpd, its join proxy and charon.

Run as root: python3 bench/acpd_memory.py [N] [--settle S] [--imports] [--json PATH].
Two enrolled acpd on one link (host kernel: every part starts; the secure channel is tried but
never comes up, the host has no ESP). After S seconds (default 10) it reads node n1's processes
from /proc ("idle": all parts running, one link), then adopts N more interfaces (default 20) and
reads them again. --imports adds what each import costs acpd, in acpd's own order, measured in a
fresh interpreter. Prints the figures as JSON; exits 0. Budget (issues 4, 9): acpd within 40 MB
RSS per node on x86-64 (the join proxy is its own process; charon is strongSwan's); issue 19:
acpd + join proxy within 40 MB (the proxy alone: bench/join_proxy_memory.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from acp_openwrt.lab.acpd_lab import AcpdLab, descendants, process_role
from acp_openwrt.lab.acpd_runner import wait_for
from acp_openwrt.lab.topology import line
from acp_openwrt.netns import call_in, create_namespace, list_namespaces, remove_namespace

ROLES = ("acpd", "join_proxy", "charon")
# acpd's imports in the order a running enrolled node makes them (acpd.main, then the parts).
IMPORT_ORDER = (
    "asyncio", "acp_openwrt.acpd", "cryptography.x509", "acp_openwrt.identity.summary",
    "pyroute2.iproute.linux", "acp_openwrt.coordinator", "acp_openwrt.links.part",
    "acp_openwrt.rpl.part", "cbor2", "acp_openwrt.grasp.part", "vici",
    "acp_openwrt.channels.part", "acp_openwrt.discovery.part",
    "acp_openwrt.brski.proxy.part", "acp_openwrt.brski.pledge.part",
    "acp_openwrt.control.part",
)
IMPORT_PROBE = """
import gc, importlib, json, sys
def kb(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1])
from acp_openwrt import pyroute2_lean
pyroute2_lean.install()  # as acpd.main does
rows = [("interpreter", kb("VmRSS:"), kb("RssAnon:"), kb("RssFile:"), len(sys.modules))]
for name in sys.argv[1:]:
    importlib.import_module(name)
    gc.collect()
    rows.append((name, kb("VmRSS:"), kb("RssAnon:"), kb("RssFile:"), len(sys.modules)))
print(json.dumps(rows))
"""


def process_memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile (status) and Pss (smaps_rollup) in MB; {} if gone."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) / 1024
    except OSError:
        return {}
    return out


def node_memory(acpd_pid: int) -> dict[str, dict[str, float]]:
    """Per role (acpd, join_proxy, charon): the summed figures of its processes, and how many."""
    roles: dict[str, dict[str, float]] = {role: {} for role in ROLES}
    for pid in (acpd_pid, *descendants(acpd_pid)):
        role = process_role(pid)
        if role not in roles:
            continue
        figures = roles[role]
        for key, value in process_memory(pid).items():
            figures[key] = figures.get(key, 0.0) + value
        figures["processes"] = figures.get("processes", 0) + 1
    return {role: {k: round(v, 1) for k, v in figures.items()} for role, figures in roles.items()}


def add_links(host: str, wire: str, n: int) -> None:
    """n veth pairs: `m<i>` in the node's host namespace, the other end up in `wire`."""
    from pyroute2 import IPRoute

    def make() -> None:
        with IPRoute() as ipr:
            for i in range(n):
                ipr.link("add", ifname=f"m{i}", kind="veth", peer={"ifname": f"w{i}"})
                ipr.link("set", index=ipr.link_lookup(ifname=f"w{i}")[0],
                         net_ns_fd=f"/run/netns/{wire}")
                ipr.link("set", index=ipr.link_lookup(ifname=f"m{i}")[0], state="up")
    call_in(host, make)

    def up() -> None:
        with IPRoute() as ipr:
            for i in range(n):
                ipr.link("set", index=ipr.link_lookup(ifname=f"w{i}")[0], state="up")
    call_in(wire, up)


def import_costs() -> list[dict[str, Any]]:
    """RSS added by each of acpd's imports (MB), in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *IMPORT_ORDER], check=True,
                         capture_output=True, text=True, timeout=120)
    rows = json.loads(out.stdout)
    result = [{"import": rows[0][0], "rss_mb": round(rows[0][1] / 1024, 1)}]
    for before, after in pairwise(rows):
        result.append({"import": after[0],
                       "rss_mb": round((after[1] - before[1]) / 1024, 1),
                       "anon_mb": round((after[2] - before[2]) / 1024, 1),
                       "file_mb": round((after[3] - before[3]) / 1024, 1),
                       "modules": after[4] - before[4]})
    result.append({"import": "total", "rss_mb": round(rows[-1][1] / 1024, 1),
                   "modules": rows[-1][4]})
    return result


def site_hooks_mb() -> float:
    """RSS that this interpreter's site-packages .pth hooks add before acpd imports anything
    (python3 -c pass against python3 -S -c pass). A sandbox or distribution hook (one here
    pulls in certifi) counts in acpd's RSS but is not acpd's; reported beside the figure."""
    probe = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    with_site, without = (int(subprocess.run([sys.executable, *flags, "-c", probe], check=True,
                                             capture_output=True, text=True).stdout)
                          for flags in ([], ["-S"]))
    return round((with_site - without) / 1024, 1)


def measure(n: int, settle: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="acpd-mem-"))
    lab = AcpdLab(line(2), workdir)
    wire = ""
    results: dict[str, Any] = {}
    try:
        lab.up()
        for name in lab.nodes:
            lab.enrol(name)
        lab.start_all()
        node = lab.nodes["n1"]
        assert node.proc is not None
        time.sleep(settle)
        status = lab.ask("n1", "status")
        results["parts"] = status["parts"]
        results["failed_parts"] = status["failed_parts"]
        results["settle_s"] = settle
        results["node"] = node_memory(node.proc.pid)
        results["idle"] = results["node"]["acpd"]  # the figure bench_summary checks
        # issue 19's target: acpd and its join proxy together (RSS; PSS counts the shared
        # interpreter pages once)
        results["acpd_plus_join_proxy"] = {
            key: round(sum(results["node"][role].get(key, 0.0)
                           for role in ("acpd", "join_proxy")), 1) for key in ("VmRSS", "Pss")}
        results["site_hooks_mb"] = site_hooks_mb()
        if n:
            wire = f"{node.name}-memw"
            create_namespace(wire)
            before = len(lab.ask("n1", "interfaces"))
            t0 = time.monotonic()
            add_links(node.host_ns, wire, n)
            wait_for(lambda: len([e for e in lab.ask("n1", "interfaces") if e["link_local"]])
                     >= before + n, timeout=60, what=f"{n} more adopted")
            results[f"adopt_{n}_s"] = round(time.monotonic() - t0, 2)
            time.sleep(1.0)
            results[f"with_{n}_interfaces"] = node_memory(node.proc.pid)
    finally:
        lab.close()
        if wire and wire in list_namespaces():
            remove_namespace(wire)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"{'MB':<30} {'RSS':>6} {'PSS':>6} {'anon':>6} {'HWM':>6}"]
    for label, key in (("all parts", "node"), *[(k.replace("_", " "), k) for k in results
                                                 if k.startswith("with_")]):
        for role, f in results[key].items():
            if f:
                lines.append(f"{label + ' ' + role:<30} {f['VmRSS']:>6} {f['Pss']:>6} "
                             f"{f['RssAnon']:>6} {f['VmHWM']:>6}")
    if "acpd_plus_join_proxy" in results:
        both = results["acpd_plus_join_proxy"]
        lines.append(f"{'acpd + join proxy':<30} {both['VmRSS']:>6} {both['Pss']:>6}")
    if "site_hooks_mb" in results:
        lines.append(f"of acpd's RSS, this interpreter's site .pth hooks: "
                     f"{results['site_hooks_mb']} MB")
    for row in results.get("imports", []):
        extra = f"  (+{row['modules']} modules)" if "anon_mb" in row else ""
        lines.append(f"import {row['import']:<40} {row['rss_mb']:>5}{extra}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=20,
                        help="interfaces to adopt on top (0: only the all-parts figures)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds after start before reading (default 10)")
    parser.add_argument("--imports", action="store_true",
                        help="also measure what each of acpd's imports costs")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    results = measure(args.n, args.settle)
    if args.imports:
        results["imports"] = import_costs()
    print(table(results), file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

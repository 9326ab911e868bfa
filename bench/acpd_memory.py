"""acpd's memory per node: RSS and PSS of acpd, its join proxy and charon, on three nodes.

Run as root: python3 bench/acpd_memory.py [N] [--settle S] [--imports] [--json PATH]
[--only enrolled|pledge|registrar ...].
- enrolled: two enrolled acpd on one link (host kernel: every part starts; the secure channel is
  tried but never comes up, the host has no ESP). After S seconds (default 10) it reads node
  n1's processes from /proc ("idle": all parts running, one link), then adopts N more
  interfaces (default 20) and reads them again.
- pledge: two acpd with only an IDevID on one link (no proxy anywhere: both stay idle pledges).
- registrar: a registrar node (its own domain CA, MASA in this process) and a pledge on one link;
  read as the pledge has enrolled through it (its registrar worker, the child doing the TLS,
  CMS and signing, still there: "at enrolment"), then once that worker left (idle) and S
  seconds have passed (the target's figure).
--imports adds what each import costs acpd, in acpd's own order, measured in a fresh
interpreter (acpd's lean asyncio and pyroute2 installed first, as acpd.main does), and for each
node the modules its acpd holds beyond those (what its parts import while running). Prints the
figures as JSON; exits 0. Budget (issue 19, x86-64 RSS, charon apart): acpd + join proxy <= 40 MB
on an enrolled node (the proxy alone: bench/join_proxy_memory.py); an idle pledge <= 30 MB; the
registrar node <= 55 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import site
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

ROLES = ("acpd", "join_proxy", "registrar_worker", "charon")
SCENARIOS = ("enrolled", "pledge", "registrar")
# issue 19's targets, MB of RSS: (what, roles summed, limit)
TARGETS = {"enrolled": ("acpd + join proxy", ("acpd", "join_proxy"), 40.0),
           "pledge": ("acpd + join proxy", ("acpd", "join_proxy"), 30.0),
           "registrar": ("acpd + join proxy", ("acpd", "join_proxy"), 55.0)}
# acpd's imports in the order a running enrolled node makes them (acpd.main, then the parts).
IMPORT_ORDER = (
    "asyncio", "acp_openwrt.acpd", "acp_openwrt.identity.summary",
    # the parse-only certificate and key readers (not cryptography: issue 19)
    "acp_openwrt.identity.cert_name", "acp_openwrt.identity.key_reader",
    "pyroute2.iproute.linux", "acp_openwrt.coordinator", "acp_openwrt.links.part",
    "acp_openwrt.rpl.part", "cbor2", "acp_openwrt.grasp.part", "vici",
    "acp_openwrt.acpmap.part", "acp_openwrt.channels.part", "acp_openwrt.revocation.part",
    "acp_openwrt.discovery.part",
    "acp_openwrt.brski.proxy.part", "acp_openwrt.brski.pledge.part",
    "acp_openwrt.control.part",
)
# Not in an enrolled node's steady state: what a pledge's first attempt (or a renewal) adds,
# then what the registrar's part adds on top (shown after the total).
IMPORT_EXTRA = ("acp_openwrt.brski.pledge.client", "acp_openwrt.brski.pledge.renewal",
                "acp_openwrt.brski.registrar.part")
IMPORT_PROBE = """
import gc, importlib, json, sys
def kb(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1])
from acp_openwrt import asyncio_lean, pyroute2_lean, stand_ins
pyroute2_lean.install()  # as acpd.main does
stand_ins.install(stand_ins.CRYPTOGRAPHY)
rows = [("interpreter", kb("VmRSS:"), kb("RssAnon:"), kb("RssFile:"), len(sys.modules))]
for name in sys.argv[1:]:
    if name == "asyncio":
        asyncio_lean.install()  # as acpd.main does: asyncio without ssl
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


def _probe(names: tuple[str, ...], site_module: bool) -> list[list[Any]]:
    """The import probe's rows; without the site module, this package and the site-packages
    are on its path instead."""
    import acp_openwrt
    path = [str(Path(acp_openwrt.__file__).parents[1]), *site.getsitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    flags = [] if site_module else ["-S"]
    out = subprocess.run([sys.executable, *flags, "-c", IMPORT_PROBE, *names], check=True,
                         capture_output=True, text=True, timeout=120, env=env)
    rows: list[list[Any]] = json.loads(out.stdout)
    return rows


def import_costs() -> list[dict[str, Any]]:
    """RSS added by each of acpd's imports (MB), in a fresh interpreter without the site
    module: what they cost on a machine without this one's .pth hooks (site_hooks_mb), such as
    OpenWrt."""
    rows = _probe((*IMPORT_ORDER, *IMPORT_EXTRA), site_module=False)
    result = [{"import": rows[0][0], "rss_mb": round(rows[0][1] / 1024, 1)}]
    for i, (before, after) in enumerate(pairwise(rows)):
        if i == len(IMPORT_ORDER):
            result.append({"import": "total", "rss_mb": round(before[1] / 1024, 1),
                           "modules": before[4]})
        result.append({"import": after[0] + (" (not enrolled: BRSKI work)"
                                             if i >= len(IMPORT_ORDER) else ""),
                       "rss_mb": round((after[1] - before[1]) / 1024, 1),
                       "anon_mb": round((after[2] - before[2]) / 1024, 1),
                       "file_mb": round((after[3] - before[3]) / 1024, 1),
                       "modules": after[4] - before[4]})
    return result


def site_hooks_mb() -> float:
    """What this interpreter's site-packages .pth hooks add to an enrolled acpd's RSS: acpd's
    imports with the site module against without it (a sandbox or distribution hook, one here
    pulls in certifi, counts in acpd's RSS but is not acpd's; most of what it imports acpd
    imports anyway, so this is less than the hook alone costs a bare interpreter)."""
    with_site, without = (_probe(IMPORT_ORDER, site_module=flag)[-1][1] for flag in (True, False))
    return round((with_site - without) / 1024, 1)


def mappings(pid: int, top: int = 10) -> dict[str, float]:
    """Where a process's RSS lies (MB): its heap, its anonymous mappings (pymalloc arenas,
    thread stacks, malloc arenas) and its largest file mappings (libpython, extension modules,
    libcrypto...), from /proc/PID/smaps."""
    sizes: dict[str, float] = {}
    name = ""
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping: range perms offset dev inode [path]
                name = Path(fields[5]).name if len(fields) > 5 else "[anon]"
            elif fields[0] == "Rss:":
                sizes[name] = sizes.get(name, 0.0) + int(fields[1]) / 1024
    except OSError:
        return {}
    biggest = sorted(sizes.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return {k: round(v, 1) for k, v in biggest}


def acpd_pid(node: Any) -> int:
    assert node.proc is not None
    return next(pid for pid in (node.proc.pid, *descendants(node.proc.pid))
                if process_role(pid) == "acpd")


def read_node(lab: AcpdLab, name: str, scenario: str) -> dict[str, Any]:
    """One node's figures: per role, the target's sum, the parts, where acpd's RSS lies."""
    node = lab.nodes[name]
    assert node.proc is not None
    status = lab.ask(name, "status")
    figures = node_memory(node.proc.pid)
    what, roles, limit = TARGETS[scenario]
    total = {key: round(sum(figures[r].get(key, 0.0) for r in roles), 1)
             for key in ("VmRSS", "Pss")}
    return {"node": figures, "target": {"what": what, "limit_mb": limit, **total,
                                        "met": total["VmRSS"] <= limit},
            "parts": status["parts"], "failed_parts": status["failed_parts"],
            "acpd_mappings_mb": mappings(acpd_pid(node))}


def measure_enrolled(workdir: Path, n: int, settle: float) -> dict[str, Any]:
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
        results.update(read_node(lab, "n1", "enrolled"))
        results["settle_s"] = settle
        results["idle"] = results["node"]["acpd"]  # the figure bench_summary checks
        # issue 19's target: acpd and its join proxy together (RSS; PSS counts the shared
        # interpreter pages once)
        results["acpd_plus_join_proxy"] = {k: results["target"][k] for k in ("VmRSS", "Pss")}
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
    return results


def measure_pledge(workdir: Path, settle: float) -> dict[str, Any]:
    """Two IDevID-only nodes on one link: no join proxy anywhere, so both stay idle pledges."""
    lab = AcpdLab(line(2), workdir)
    try:
        lab.up()
        lab.start_masa("n1")
        for name in lab.nodes:
            lab.make_pledge(name)
        lab.start_all()
        time.sleep(settle)
        results = read_node(lab, "n1", "pledge")
        results["brski_state"] = lab.ask("n1", "brski")["state"]
    finally:
        lab.close()
    return results


def measure_registrar(workdir: Path, settle: float) -> dict[str, Any]:
    """n1 the registrar, n2 a pledge that enrols through it; read n1 at once (its registrar
    worker still there: `with_worker`), then once the worker left and S seconds passed."""
    lab = AcpdLab(line(2), workdir)
    try:
        lab.up()
        lab.registrar_and_pledges("n1", "n2")
        # (n2's acpd runs anew once enrolled: its socket is away for a moment)
        enrolled_s = round(lab.wait("n2 enrolled through n1", lambda: lab.enrolled("n2"), 60), 1)
        with_worker = node_memory(lab.nodes["n1"].proc.pid)
        worker = lab.ask("n1", "registrar")["worker"]
        left_s = round(lab.wait("n1's registrar worker left (idle)", lambda: lab.ask(
            "n1", "registrar")["worker"]["processes"] == 0, 120), 1)
        time.sleep(settle)
        results = read_node(lab, "n1", "registrar")
        results["pledge_enrolled_s"] = enrolled_s
        results["with_worker"] = with_worker
        results["worker_left_s"] = left_s
        results["worker_starts"] = worker["starts"]
    finally:
        lab.close()
    return results


def measure(n: int, settle: float, only: tuple[str, ...] = SCENARIOS) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="acpd-mem-"))
    results: dict[str, Any] = {}
    try:
        if "enrolled" in only:
            results.update(measure_enrolled(workdir / "enrolled", n, settle))
        if "pledge" in only:
            results["idle_pledge"] = measure_pledge(workdir / "pledge", settle)
        if "registrar" in only:
            results["registrar"] = measure_registrar(workdir / "registrar", settle)
        results["site_hooks_mb"] = site_hooks_mb()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _role_rows(label: str, figures: dict[str, dict[str, float]]) -> list[str]:
    return [f"{label + ' ' + role:<30} {f['VmRSS']:>6} {f['Pss']:>6} {f['RssAnon']:>6} "
            f"{f['VmHWM']:>6}" for role, f in figures.items() if f]


def _node_rows(label: str, node: dict[str, Any]) -> list[str]:
    t = node["target"]
    verdict = "met" if t["met"] else "MISSED"
    return [*_role_rows(label, node["node"]),
            f"{label + ' ' + t['what']:<30} {t['VmRSS']:>6} {t['Pss']:>6}   target <= "
            f"{t['limit_mb']:.0f} MB: {verdict}",
            f"{label} acpd RSS by mapping: "
            + ", ".join(f"{k} {v}" for k, v in node["acpd_mappings_mb"].items())]


def table(results: dict[str, Any]) -> str:
    lines = [f"{'MB':<30} {'RSS':>6} {'PSS':>6} {'anon':>6} {'HWM':>6}"]
    if "node" in results:
        lines += _node_rows("enrolled", results)
    for key in results:
        if key.startswith("with_"):
            lines += _role_rows("enrolled " + key.replace("_", " "), results[key])
    if "idle_pledge" in results:
        lines += _node_rows("idle pledge", results["idle_pledge"])
    if "registrar" in results:
        lines += _node_rows("registrar", results["registrar"])
        if "with_worker" in results["registrar"]:
            lines += _role_rows("registrar at enrolment", results["registrar"]["with_worker"])
            lines.append(f"(registrar: read once its worker had left, "
                         f"{results['registrar']['worker_left_s']} s after the enrolment)")
    if "site_hooks_mb" in results:
        lines.append(f"of each acpd's RSS, this interpreter's site .pth hooks: "
                     f"{results['site_hooks_mb']} MB")
    for row in results.get("imports", []):
        extra = f"  (+{row['modules']} modules)" if "anon_mb" in row else ""
        lines.append(f"import {row['import']:<40} {row['rss_mb']:>5}{extra}")
    if results.get("imports"):
        lines.append("(imports: RSS added in MB, in acpd's order, in a fresh interpreter without "
                     "the site module's hooks)")
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
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=SCENARIOS,
                        help="which nodes to measure (default: all three)")
    args = parser.parse_args()
    results = measure(args.n, args.settle, tuple(args.only))
    if args.imports:
        results["imports"] = import_costs()
    print(table(results), file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A hostile DULL neighbour at full rate against a real acpd (issue 15): what the flood costs the
victim, and how soon its real neighbours are heard. Prints figures; asserts nothing.

Run as root: python3 bench/dull_flood.py [--seconds 60] [--interval 60] [--fakes 8192]
                                          [--json PATH]

Topology (lab.acpd_lab.AcpdLab, every acpd enrolled, discovery_interval --interval):

    sw (bridge) --- v --- c          v: the victim, whose figures these are
     |   |   |                       x: lab.spoofer, AN_ACP from --fakes spoofed link-local
     b   d   x                          sources (locator == source, ttl 0), as fast as it can

1. quiet: v and b start; how long until v lists b (the quiet-link figure), then until v
   confirms b (heard over a period, or a channel).
2. flood, --seconds long: a quarter in, c (on v's other link) and d (new on the flooded link)
   start; how long until v lists each (from the moment its DULL link is up: it floods then),
   and in what share of the samples after that v lists d. b's largest age at v (time since
   last heard) over the flood.
   v's acpd: RSS before, peak, after; CPU share over the flood (charon's apart). v's intake
   (AN_ACP floods its DULL GRASP took in per second), evictions and drops.

The host kernel has no ESP: channels are tried and fail, so confirmation is by re-hearing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from acp_openwrt.lab.acpd_lab import AcpdLab, cpu_by_role, rss_kb
from acp_openwrt.lab.acpd_runner import wait_for
from acp_openwrt.lab.spoofer import flood_topology


def dull_link_local(lab: AcpdLab, node: str) -> str:
    return wait_for(lambda: next((e["link_local"] for e in lab.ask(node, "interfaces")
                                  if e["host_interface"] == "eth0" and e["link_local"]), None),
                    timeout=30, what=f"{node}'s DULL link-local")


def listed(lab: AcpdLab, peer: str) -> dict[str, Any] | None:
    return next((e for e in lab.ask("v", "neighbors") if e["peer"] == peer), None)


def measure(seconds: float, interval: int, fakes: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="dull-flood-"))
    lab = AcpdLab(flood_topology(), workdir)
    attack: subprocess.Popen[str] | None = None
    out: dict[str, Any] = {"flood_s": seconds, "interval_s": interval, "fakes": fakes}
    try:
        lab.up()
        for name in ("v", "b", "c", "d"):
            lab.enrol(name, f"option discovery_interval '{interval}'")
        lab.start_all(["v", "b"])
        t0 = time.monotonic()
        b_ll = dull_link_local(lab, "b")
        wait_for(lambda: listed(lab, b_ll), timeout=4 * interval, interval=0.05, what="v lists b")
        out["quiet_b_heard_s"] = round(time.monotonic() - t0, 2)
        wait_for(lambda: (listed(lab, b_ll) or {}).get("confirmed"), timeout=3 * interval + 10,
                 interval=0.2, what="v confirms b")
        out["quiet_b_confirmed_s"] = round(time.monotonic() - t0, 2)
        acpd = lab.pids("v", "acpd")[0]
        time.sleep(1.0)
        rss_before = rss_kb(acpd)
        grasp0 = lab.ask("v", "status")["discovery"]["grasp"]["counters"]["engine"]
        cpu0 = cpu_by_role(lab, "v")

        assert lab.topology is not None
        attack = lab.topology["x"].popen(
            [sys.executable, "-m", "acp_openwrt.lab.spoofer", "eth0", "--seconds", str(seconds),
             "--addresses", str(fakes)], stdout=subprocess.PIPE, text=True)
        start = time.monotonic()
        rss_peak, b_age, samples, slow = rss_before, 0.0, [], 0
        late: dict[str, float] = {}      # name -> s from its link being up to v listing it
        late_ll: dict[str, str] = {}
        link_up: dict[str, float] = {}
        launched: dict[str, float] = {}
        while time.monotonic() - start < seconds:
            elapsed = time.monotonic() - start
            if not launched and elapsed >= seconds / 4:
                for name in ("c", "d"):
                    launched[name] = time.monotonic()
                    lab.start_all([name])
                    late_ll[name] = dull_link_local(lab, name)
                    link_up[name] = time.monotonic()
            asked = time.time()
            try:
                table = {e["peer"]: e for e in lab.ask("v", "neighbors")}
            except Exception:  # acpd too busy to answer in time: a figure too
                slow += 1
                continue
            if time.time() - asked > 1.0:
                slow += 1
            if b_ll in table:
                b_age = max(b_age, asked - table[b_ll]["last_seen"])
            for name, peer in late_ll.items():
                if name not in late and peer in table:
                    late[name] = max(0.0, asked - (time.time() - time.monotonic())
                                     - link_up[name])
            if "d" in late:
                samples.append(late_ll["d"] in table)
            rss_peak = max(rss_peak, rss_kb(acpd))
            time.sleep(0.25)
        wall = time.monotonic() - start
        cpu1 = cpu_by_role(lab, "v")
        report, _ = attack.communicate(timeout=60)
        attack = None
        status = lab.ask("v", "status")["discovery"]
        grasp1 = status["grasp"]["counters"]["engine"]
        time.sleep(2.0)
        rss_after = rss_kb(acpd)
        d_entry = listed(lab, late_ll["d"]) if "d" in late_ll else None
        channels = lab.ask("v", "channels")
        out.update({
            "spoofer": json.loads(report),
            "acpd_rss_mb": {"before": round(rss_before / 1024, 1),
                            "peak": round(rss_peak / 1024, 1),
                            "after": round(rss_after / 1024, 1),
                            "growth": round((rss_peak - rss_before) / 1024, 1)},
            "acpd_cpu_share": round((cpu1["acpd"] - cpu0["acpd"]) / wall, 3),
            "charon_cpu_share": round((cpu1["charon"] - cpu0["charon"]) / wall, 3),
            "intake_per_s": round((grasp1.get("flood_accepted", 0)
                                   - grasp0.get("flood_accepted", 0)) / wall, 1),
            "flood_c_heard_s": round(late["c"], 2) if "c" in late else None,
            "flood_d_heard_s": round(late["d"], 2) if "d" in late else None,
            "flood_d_listed_share": round(sum(samples) / len(samples), 3) if samples else 0.0,
            "flood_d_confirmed_after": d_entry.get("confirmed") if d_entry else None,
            "flood_b_max_age_s": round(b_age, 2),
            "control_slow_or_failed": slow,
            "channels_listed_after": len(channels),
            "acpd_start_under_flood_s": round(link_up.get("c", 0.0) - launched.get("c", 0.0), 2),
            "discovery": {"drops": status["drops"],
                          **{k: v for k, v in status["table"].items() if k != "limits"}},
        })
    finally:
        if attack is not None:
            attack.terminate()
            attack.communicate(timeout=60)
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="flood length (default 60)")
    parser.add_argument("--interval", type=int, default=60,
                        help="discovery_interval of every node (default 60, as RFC 8994)")
    parser.add_argument("--fakes", type=int, default=8192, help="spoofed sources (default 8192)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    f = measure(args.seconds, args.interval, args.fakes)
    rss, spoofer = f["acpd_rss_mb"], f["spoofer"]
    print(f"flood {f['flood_s']:.0f} s from {f['fakes']} spoofed sources, "
          f"{spoofer['per_s']:,.0f} floods/s offered; v took in {f['intake_per_s']:,.0f}/s")
    print(f"v's acpd: RSS {rss['before']} -> peak {rss['peak']} -> {rss['after']} MB "
          f"(growth {rss['growth']} MB); CPU {f['acpd_cpu_share']:.0%} of a core "
          f"(charon {f['charon_cpu_share']:.0%})")
    print(f"quiet link: b listed {f['quiet_b_heard_s']} s after start, confirmed after "
          f"{f['quiet_b_confirmed_s']} s")
    print(f"under the flood: b (confirmed, flooded link) at most {f['flood_b_max_age_s']} s "
          f"unheard; c (other link) listed {f['flood_c_heard_s']} s after its link was up "
          f"(its acpd took {f['acpd_start_under_flood_s']} s to get there); "
          f"d (new, flooded link) {f['flood_d_heard_s']} s, then listed in "
          f"{f['flood_d_listed_share']:.0%} of samples, confirmed: {f['flood_d_confirmed_after']}")
    print(f"discovery: {json.dumps(f['discovery'])}; control answers slow or failed: "
          f"{f['control_slow_or_failed']}; channels v lists after: {f['channels_listed_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(f, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

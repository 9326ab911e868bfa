"""bench/results/summary.md from the benches' JSON records: each target beside its measured figure.

Pure (records in, Markdown out) so the table's wording lives in one place; run_all.py does the
running. A figure a bench did not produce reads "not run" and its verdict "?".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Records = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Target:
    what: str
    bench: str
    goal: str
    figure: Callable[[dict[str, Any]], float]  # from the bench's figures
    met: Callable[[float], bool]
    shown: Callable[[float, dict[str, Any]], str]
    also: Callable[[dict[str, Any]], bool] | None = None  # a second condition, on the figures


def _rpl(figures: list[dict[str, Any]], key: str) -> float:
    biggest = max(figures, key=lambda r: r["nodes"])
    if biggest["nodes"] < 50:
        raise LookupError("no 50-node run")
    return biggest[key]


def _flood_no_loss(f: dict[str, Any]) -> float:
    """Highest rate asked of the sender (--rates) at which every flood sent was accepted."""
    return max((r.get("rate", r["offered"]) for r in f["flood_intake"]
                if r["accepted"] >= r["sent"]), default=0.0)


def _flood_losses(f: dict[str, Any]) -> str:
    lost = [f"{r.get('rate', r['offered']):,.0f}/s: {1 - r['accepted'] / r['sent']:.1%} lost"
            for r in f["flood_intake"] if r["accepted"] < r["sent"]]
    return f" ({'; '.join(lost)})" if lost else " (highest offered)"


def _flood_rss(f: dict[str, Any]) -> str:
    """The receiver's RSS at the end of the highest rate offered (older runs did not have it)."""
    top = max(f["flood_intake"], key=lambda r: r.get("rate", r["offered"]))
    return (f"; receiver RSS {top['receiver_rss_mb']:.1f} MB at the end"
            if "receiver_rss_mb" in top else "")


def _negotiation(v: float, f: dict[str, Any]) -> str:
    g, b = f["negotiation"]["grasp"], f["negotiation"]["bare"]
    per = f["negotiation"]["ratio_per_round"]
    floors = ""
    neg = f["negotiation"]
    if "loop_ratio" in neg:  # runs before 2026-12-06 had no floors
        floors = (f"; with no GRASP code at all an asyncio loop is {neg['loop_ratio']:.2f}x"
                  f" with callbacks only, {neg['floor_ratio']:.2f}x with an awaited API, GRASP "
                  f"{neg['ratio_to_floor']:.2f}x the latter")
    return (f"{v:.2f}x ({g['median_ms']:.3f} vs {b['median_ms']:.3f} ms; per round "
            f"{min(per):.2f}-{max(per):.2f}); p95 {g['p95_over_median']:.2f}x the median "
            f"({g['p95_ms']:.3f} ms){floors}")


def _floor(f: dict[str, Any]) -> str:
    """The line's floor (acp_formation.py: its enrolments and first channels in series)."""
    if "line4_floor_s" not in f:  # runs before 2026-12-06 afternoon
        return ""
    return (f"; its floor with no wait at all (the pledges' BRSKI exchanges + the bare IKE "
            f"hops, in series) {f['line4_floor_s']:.1f} s, itself "
            f"{f['line4_floor_vs_enrolled_ratio']:.2f}x the enrolled line")


def _line4(f: dict[str, Any], label: str = "line4") -> dict[str, Any]:
    return next(s for s in f["scenarios"] if s["scenario"] == label)


def _mesh(f: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in f["scenarios"] if s["scenario"].startswith("mesh"))


def _sim(f: dict[str, Any], nodes: int, key: str, topology: str = "campus") -> float:
    return next(r[key] for r in f["rows"] if r["topology"] == topology
                and r["nodes"] == nodes and r["variant"] == "repeat1")


TARGETS = (
    Target("acpd RSS per node, idle (x86-64)", "acpd_memory", "<= 40 MB",
           lambda f: f["idle"]["VmRSS"], lambda v: v <= 40,
           lambda v, f: f"{v:.1f} MB (PSS {f['idle']['Pss']:.1f} MB"
                        + (f"; {f['site_hooks_mb']:.1f} MB of it this machine's site .pth hooks"
                           if f.get("site_hooks_mb") else "") + ")"),
    Target("acpd + join proxy RSS, enrolled node, all parts (x86-64)", "acpd_memory",
           "<= 40 MB", lambda f: f["acpd_plus_join_proxy"]["VmRSS"], lambda v: v <= 40,
           lambda v, f: f"{v:.1f} MB (acpd {f['idle']['VmRSS']:.1f} + join proxy "
                        f"{f['node']['join_proxy'].get('VmRSS', 0.0):.1f})"),
    Target("acpd RSS, idle pledge (x86-64)", "acpd_memory", "<= 30 MB",
           lambda f: f["idle_pledge"]["target"]["VmRSS"], lambda v: v <= 30,
           lambda v, f: f"{v:.1f} MB (PSS {f['idle_pledge']['target']['Pss']:.1f} MB)"),
    Target("acpd + join proxy RSS, registrar node (x86-64)", "acpd_memory", "<= 55 MB",
           lambda f: f["registrar"]["target"]["VmRSS"], lambda v: v <= 55,
           lambda v, f: f"{v:.1f} MB (acpd {f['registrar']['node']['acpd']['VmRSS']:.1f} MB, "
                        f"after enrolling a pledge)"),
    Target("acpd + join proxy RSS per node, ACP formed (guest)", "acp_formation", "<= 40 MB",
           lambda f: f["max_node_rss_mb"], lambda v: v <= 40,
           lambda v, f: f"{v:.1f} MB largest, {f['mean_node_rss_mb']:.1f} MB mean "
                        f"(acpd alone {f['max_acpd_rss_mb']:.1f} MB; charon apart: "
                        f"{f['max_charon_rss_mb']:.1f} MB)"),
    Target("ACP formation, 4-node line, IDevID only (guest)", "acp_formation",
           "<= 2x sum of bare IKE of its 3 hops",
           lambda f: f["line4_ratio"], lambda v: v <= 2.0,
           lambda v, f: f"{_line4(f)['formation_s']:.1f} s (enrolled "
                        f"{_line4(f)['enrolled_s']:.1f} s) vs bare IKE "
                        f"{' + '.join(f'{x:.1f}' for x in f['bare_ike_hops_s'])} = "
                        f"{sum(f['bare_ike_hops_s']):.1f} s: ratio {v:.2f}"),
    Target("ACP formation, 4-node line, every node enrolled already (guest)", "acp_formation",
           "(figure: the same ratio without BRSKI)",
           lambda f: f["line4_enrolled_ratio"], lambda v: True,
           lambda v, f: f"{_line4(f, 'line4-enrolled')['formation_s']:.1f} s after the last "
                        f"acpd answered (channels may start before: "
                        f"{_line4(f, 'line4-enrolled')['launch_to_formation_s']:.1f} s from "
                        f"launch) vs bare IKE {sum(f['bare_ike_hops_s']):.1f} s: ratio {v:.2f}"),
    Target("ACP formation, 4-node line, IDevID only vs already enrolled (guest)",
           "acp_formation", "<= 2x the enrolled line, same run (issue 19)",
           lambda f: f["line4_vs_enrolled_ratio"], lambda v: v <= 2.0,
           lambda v, f: f"{_line4(f)['formation_s']:.1f} s vs "
                        f"{_line4(f, 'line4-enrolled')['formation_s']:.1f} s after the last "
                        f"acpd answered: ratio {v:.2f}" + _floor(f)),
    Target("ACP formation, per hop: upstream channel up -> pledge's LDevID (guest)",
           "acp_formation", "<= 2x that pledge's own BRSKI exchange (issue 19)",
           lambda f: f["line4_worst_hop_ratio"], lambda v: v <= 2.0,
           lambda v, f: "; ".join(
               f"{h['upstream']}->{h['pledge']} {h['hop_s']:.1f} s vs BRSKI "
               f"{h['brski_s']:.1f} s ({h['ratio']:.2f}x)" for h in _line4(f)["hops"]
               if h["ratio"] is not None) + f": worst {v:.2f}x"),
    Target("ACP formation, random mesh, IDevID only (guest)", "acp_formation", "(figure only)",
           lambda f: _mesh(f)["launch_to_formation_s"], lambda v: True,
           lambda v, f: f"{_mesh(f)['nodes']} nodes, {_mesh(f)['links']} links: {v:.1f} s from "
                        f"launch ({_mesh(f)['started_s']:.1f} s of it starting acpd 2 at a "
                        f"time; {_mesh(f)['formation_s']:.1f} s after the last answered)"),
    Target("BRSKI enrolment per pledge, namespaces", "brski_enrol", "< 1 s",
           lambda f: f["median_ms"], lambda v: v < 1000,
           lambda v, f: f"{v:.0f} ms median of {f['runs']}"),
    Target("GRASP decode+validate, RFC 8990 A.2 flood", "grasp_codec", ">= 200,000/s",
           lambda f: f["rates_per_s"]["decode+validate, A.2 flood (56 B)"],
           lambda v: v >= 200_000, lambda v, f: f"{v:,.0f}/s"),
    Target("GRASP flood intake, one core, no loss", "grasp_io", ">= 40,000/s",
           _flood_no_loss, lambda v: v >= 40_000,
           lambda v, f: f"{v:,.0f}/s without loss{_flood_losses(f)}{_flood_rss(f)}"),
    Target("GRASP memory under a sustained distinct flood, default limits", "grasp_flood_memory",
           "<= 1 MB RSS growth over the second half",
           lambda f: f["service"]["rss_growth_second_half_mb"], lambda v: v <= 1.0,
           lambda v, f: f"{v:+.2f} MB ({f['service']['rss_before_mb']:.1f} -> "
                        f"{f['service']['rss_after_mb']:.1f} MB, peak "
                        f"{f['service']['rss_peak_mb']:.1f} MB; "
                        f"{f['service']['accepted']:,} floods "
                        f"in {f['service']['seconds']:.0f} s)"),
    Target("GRASP negotiation request -> step -> end vs bare sockets, same run", "grasp_io",
           "<= 1.3x bare socket; p95 <= 2x median",
           lambda f: f["negotiation_ratio"], lambda v: v <= 1.3, _negotiation,
           also=lambda f: f["negotiation_p95_over_median"] <= 2),
    Target("Steady control messages per node, 1000 vs 100 nodes (sim, campus)", "sim_scale",
           "ratio <= 1.5", lambda f: _sim(f, 1000, "steady_messages_per_node_per_min")
           / _sim(f, 100, "steady_messages_per_node_per_min"), lambda v: v <= 1.5,
           lambda v, f: f"{v:.2f} ({_sim(f, 1000, 'steady_messages_per_node_per_min')} vs "
                        f"{_sim(f, 100, 'steady_messages_per_node_per_min')} per minute; cold "
                        f"start of 1000 nodes {_sim(f, 1000, 'cold_start_s')} s)"),
    Target("RPL convergence, 50 nodes, all pairs", "rpl_convergence", "<= 10 s",
           lambda f: _rpl(f, "convergence_s"), lambda v: v <= 10, lambda v, f: f"{v:.2f} s"),
    Target("RPL healing after a link cut, 50 nodes", "rpl_convergence", "<= 3 s",
           lambda f: _rpl(f, "heal_s"), lambda v: v <= 3, lambda v, f: f"{v:.2f} s"),
    Target("Secure channel to first ping, acpd vs bare swanctl (guest)", "channels",
           "ratio <= 1.5", lambda f: f["ratio"], lambda v: v <= 1.5,
           lambda v, f: f"{v:.2f} ({f['acp_s']:.2f} s vs {f['bare_s']:.2f} s)"),
    Target("Channels back after a charon SIGKILL (guest)", "channel_faults", "<= 10 s",
           lambda f: f["faults"]["charon_kill"]["channels_s"], lambda v: v <= 10,
           lambda v, f: f"{v:.1f} s (link down 5 s: healed {f['faults']['link_flap']['healed_s']}"
                        f" s after its return; neighbour vanished: routes withdrawn after "
                        f"{f['faults']['vanish']['n2_routes_s']} s)"),
    Target("acpd RSS growth, 60 s spoofed AN_ACP flood, with channels (guest)",
           "channel_faults", "<= 10 MB", lambda f: f["flood"]["acpd_rss_mb"]["growth"],
           lambda v: v <= 10,
           lambda v, f: f"{v:.1f} MB (CPU {f['flood']['acpd_cpu_share']:.0%} of a core)"),
    Target("New neighbour's channel under that flood vs quiet (guest)", "channel_faults",
           "ratio <= 2", lambda f: f["flood"]["channel_ratio"], lambda v: v <= 2,
           lambda v, f: f"{v:.1f} (other link {_median_of(f['flood']['other_link'])} vs "
                        f"{_median_of(f['flood']['quiet'])} quiet; on the flooded link "
                        f"{f['flood']['flooded_link']['channel_s']} s)"),
)


def _median_of(figure: dict[str, Any]) -> str:
    """A channel time, with the samples it is the median of (channel_faults takes several)."""
    runs = figure.get("samples")
    if not runs or len(runs) < 2:
        return f"{figure['channel_s']} s"
    return f"{figure['channel_s']} s (median of {', '.join(str(r) for r in runs)})"


def rows(records: Records) -> list[tuple[str, str, str, str]]:
    """(what, target, measured, verdict) per target."""
    out = []
    for t in TARGETS:
        figures = (records.get(t.bench) or {}).get("figures")
        try:
            value = t.figure(figures)
            met = t.met(value) and (t.also is None or t.also(figures))
            measured, verdict = t.shown(value, figures), ("met" if met else "MISSED")
            if t.goal.startswith("("):
                verdict = "-"
        except (LookupError, TypeError, ValueError):
            measured, verdict = "not run", "?"
        out.append((t.what, t.goal, measured, verdict))
    return out


def summary_markdown(records: Records, meta: dict[str, Any]) -> str:
    host = meta["host"]
    lines = [
        f"# Benchmarks, {meta['date']}",
        "",
        f"Host: {host['cpu']}, {host['cores']} cores, Linux {host['kernel']} ({host['machine']}), "
        f"Python {host['python']}. Guest rows: QEMU TCG (no KVM), 2 vCPUs, 2 GB, Debian kernel "
        f"{meta['guest_kernel']}, on that host.",
        f"This run took {meta['total_seconds'] / 60:.1f} min"
        + (f" for {', '.join(meta['ran'])} (the other rows: their last run, dated below)"
           if meta.get("partial") else " for every bench")
        + (" (--quick: short runs, figures not comparable)." if meta.get("quick") else "."),
        "",
        "| what | target | measured | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {what} | {goal} | {measured} | {verdict} |"
              for what, goal, measured, verdict in rows(records)]
    lines += ["", "| bench | where | ran | seconds | exit |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['where']} | {r['started']} | {r['seconds']} "
              f"| {r['exit_status']} |" for r in records.values()]
    return "\n".join(lines) + "\n"

"""How the ACP's costs grow with N: `acp-lab sim` (issue 20) over sizes and topologies.

    python3 bench/sim_scale.py [--sizes 10 100 1000] [--topologies campus rings mesh]
                               [--seed 1] [--plot docs/scaling.png] [--json PATH]

Each run is one `acp-lab sim` child process (so each has its own memory figures): cold start
from IDevID-only nodes to the full ACP, then a 600 s steady-state window. Two variants:

- ``as_is``: the AN_join_registrar repeat on every new channel with the cached loop count, as
  grasp/part.py did before this bench found it: each repeat is a network-wide flood (O(N)
  messages per new channel, O(N^2) per cold start). Run only up to ``--as-is-max`` nodes
  (default 300): at 1000 it is millions of simulated messages.
- ``repeat1``: the repeat at loop count 1 (only the new neighbour hears it), as grasp/part.py
  does now (docs/scaling.md); run at every size.

Plus the lab's own shapes for validation (line 4, the 10-node mesh; bench/acp_formation.py's
guest figures are in bench/results/acp_formation.json). Growth curves go to --plot (a PNG with
matplotlib, a hand-written SVG without it). Figures only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_sim(kind: str, nodes: int, seed: int, extra: list[str]) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory(prefix="simscale") as tmp:
        out = Path(tmp) / "sim.json"
        argv = [sys.executable, "-m", "acp_openwrt.lab.cli", "sim", "--nodes", str(nodes),
                "--topology", kind, "--seed", str(seed), "--json", str(out), *extra]
        status = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
        if not out.exists():
            print(f"sim_scale: {kind} {nodes} {extra}: no figures (exit {status})",
                  file=sys.stderr)
            return None
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def row(r: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, one line per run."""
    cold, steady = r["cold_start"], r.get("steady", {})
    routes, memory = r.get("routes", {}), r.get("memory", {})
    root = steady.get("root_received_per_min", {})
    return {
        "topology": r["topology"], "nodes": r["nodes"], "links": r["links"],
        "depth": r["depth"], "formed": r["formed"],
        "cold_start_s": cold["formation_s"], "enrolled_s": cold["enrolled_s"],
        "cold_start_messages_per_node": cold["messages_per_node"],
        "cold_start_grasp_floods_per_node": round(
            cold["by_kind"].get("grasp_flood", 0) / r["nodes"], 1),
        "steady_messages_per_node_per_min": steady.get("messages_per_node_per_min"),
        "flood_transmissions_per_originated": steady.get("flood_transmissions_per_originated"),
        "flood_relays_per_originated": steady.get("flood_relays_per_originated"),
        "routes_root": routes.get("root"), "routes_median": routes.get("median"),
        "rpl_depth_max": routes.get("rpl_depth_max"),
        "root_dio_per_min": root.get("rpl_dio"), "root_dao_per_min": root.get("rpl_dao"),
        "root_dao_bytes_per_min": steady.get("root_dao_bytes_per_min"),
        "enrolments_per_s_mean": cold["enrolments_per_s_mean"],
        "enrolments_per_s_peak": cold["enrolments_per_s_peak"],
        "registrar_busy_fraction": cold["registrar_busy_fraction"],
        "memory_median_node_bytes": memory.get("median_node_bytes"),
        "memory_root_bytes": memory.get("root_bytes"),
        "sim_wall_s": r["run"]["wall_s"], "sim_max_rss_mb": r["run"]["max_rss_mb"],
    }


CURVES = (  # (key, title, log y)
    ("cold_start_s", "cold start to the full ACP [s]", False),
    ("steady_messages_per_node_per_min", "control messages per node per minute", False),
    ("flood_transmissions_per_originated", "transmissions per ACP flood", True),
    ("cold_start_grasp_floods_per_node", "cold start: GRASP flood msgs per node", True),
    ("routes_root", "routes at the root", True),
    ("root_dao_per_min", "DAOs received by the root per minute", True),
    ("memory_median_node_bytes", "sim memory, median node [bytes]", False),
    ("memory_root_bytes", "sim memory, root [bytes]", True),
)


def series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(f"{r['topology']} {r['variant']}", []).append(r)
    return {k: sorted(v, key=lambda r: r["nodes"]) for k, v in sorted(out.items())}


def plot_png(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, (key, title, logy) in zip(axes.flat, CURVES, strict=True):
        for name, rs in series(rows).items():
            pts = [(r["nodes"], r[key]) for r in rs if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o",
                        linestyle="--" if "as_is" in name else "-", label=name)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("nodes")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("acp-lab sim: how the ACP's costs grow (issue 20)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def plot_svg(rows: list[dict[str, Any]], path: Path) -> None:
    """The same panels as plot_png, drawn by hand (log x; log y where the PNG has it)."""
    import math

    w, h, cols = 300, 220, 4
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * w}" '
             f'height="{2 * h}" font-family="sans-serif" font-size="10">']
    names = list(series(rows))
    for i, (key, title, logy) in enumerate(CURVES):
        ox, oy = (i % cols) * w, (i // cols) * h
        pts_all = [(r["nodes"], r[key]) for r in rows if r.get(key)]
        parts.append(f'<text x="{ox + 10}" y="{oy + 14}">{title}</text>')
        if not pts_all:
            continue
        fx = [math.log10(x) for x, _ in pts_all]
        fy = [math.log10(y) if logy else y for _, y in pts_all]
        x0, x1 = min(fx), max(fx) or 1
        y0, y1 = min(min(fy), 0 if not logy else min(fy)), max(fy)

        def sx(x: float, x0: float = x0, x1: float = x1, ox: int = ox) -> float:
            return ox + 40 + (math.log10(x) - x0) / ((x1 - x0) or 1) * (w - 60)

        def sy(y: float, y0: float = y0, y1: float = y1, oy: int = oy,
               logy: bool = logy) -> float:
            v = math.log10(y) if logy else y
            return oy + h - 30 - (v - y0) / ((y1 - y0) or 1) * (h - 60)

        parts.append(f'<rect x="{ox + 40}" y="{oy + 30}" width="{w - 60}" height="{h - 60}" '
                     'fill="none" stroke="#999"/>')
        parts.append(f'<text x="{ox + 2}" y="{oy + 34}">{(10 ** y1 if logy else y1):.3g}</text>')
        for n, (name, rs) in enumerate(series(rows).items()):
            pts = [(r["nodes"], r[key]) for r in rs if r.get(key)]
            colour = colours[names.index(name) % len(colours)]
            dash = ' stroke-dasharray="4,3"' if "as_is" in name else ""
            if len(pts) > 1:
                d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
                parts.append(f'<polyline points="{d}" fill="none" stroke="{colour}"{dash}/>')
            for x, y in pts:
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" '
                             f'fill="{colour}"/>')
            if i == 0:
                parts.append(f'<text x="{ox + 45}" y="{oy + 44 + 11 * n}" fill="{colour}">'
                             f'{name}</text>')
        for x in sorted({x for x, _ in pts_all}):
            parts.append(f'<text x="{sx(x) - 8:.1f}" y="{oy + h - 16}">{x}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def validation(seed: int) -> dict[str, Any]:
    """Simulated line4 and mesh10 next to the guest's (bench/acp_formation.py) figures."""
    out: dict[str, Any] = {}
    guest_path = ROOT / "bench" / "results" / "acp_formation.json"
    guest = {}
    if guest_path.exists():
        figures = json.loads(guest_path.read_text()).get("figures") or {}
        guest = {s["scenario"]: s for s in figures.get("scenarios", [])}
    for name, kind, nodes, extra in (("line4", "line", 4, []),
                                     ("line4-enrolled", "line", 4, ["--enrolled"]),
                                     ("mesh10", "lab-mesh10", 10, [])):
        r = run_sim(kind, nodes, seed, ["--steady", "60", *extra])
        if r is None:
            continue
        g = guest.get(name, {})
        out[name] = {
            "sim": {k: r["cold_start"].get(k) for k in ("enrolled_s", "channels_s",
                                                         "formation_s", "enrolled_at_s")},
            "guest": {k: g.get(k) for k in ("enrolled_s", "channels_s", "formation_s",
                                             "enrolled_at_s", "started_s")},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--topologies", nargs="+", default=["campus", "rings", "mesh"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--as-is-max", type=int, default=300,
                        help="run the as-is variant only up to this many nodes")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "scaling.png")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    rows = []
    for kind in args.topologies:
        for nodes in args.sizes:
            variants = [("repeat1", ["--repeat-loop-count", "1"])]
            if nodes <= args.as_is_max:
                variants.insert(0, ("as_is", ["--repeat-loop-count", "255"]))
            for variant, extra in variants:
                r = run_sim(kind, nodes, args.seed, extra)
                if r is None:
                    continue
                line = {"variant": variant, **row(r)}
                rows.append(line)
                print(json.dumps(line), flush=True)
    figures = {"seed": args.seed, "rows": rows, "validation": validation(args.seed)}
    if args.plot.suffix == ".png" and not plot_png(rows, args.plot):
        args.plot = args.plot.with_suffix(".svg")
    if args.plot.suffix == ".svg":
        plot_svg(rows, args.plot)
    figures["plot"] = str(args.plot.relative_to(ROOT)) if args.plot.is_relative_to(ROOT) \
        else str(args.plot)
    print(json.dumps(figures["validation"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if rows and all(r["formed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

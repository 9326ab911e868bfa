"""`acp-lab sim`: one simulation run, its figures as JSON on stdout (and in --json PATH)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .net import Model
from .run import LIMIT_S, STEADY_S, simulate
from .topology import KINDS


def _sim(args: argparse.Namespace) -> int:
    model = Model(loss=args.loss, enrolled_at_start=args.enrolled,
                  asa_flood_s=args.asa_flood, repeat_loop_count=args.repeat_loop_count)
    try:
        result = simulate(args.topology, args.nodes, args.seed, model, steady_s=args.steady,
                          limit_s=args.limit, memory=not args.no_memory)
    except ValueError as exc:
        print(f"acp-lab sim: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if result["formed"] else 1


def add_sim_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim", help="simulate an ACP of N nodes on the real protocol cores (one process)",
        description="Discrete-event simulation of an ACP: cold start from IDevID-only nodes "
                    "(node 0 registrar and DODAG root) to the full ACP, then a steady-state "
                    "window; prints the figures as JSON. Same seed, same figures (except "
                    "the 'run' block: wall time, RSS). Exit 1 if the ACP did not form.")
    p.add_argument("--nodes", type=int, default=100, metavar="N")
    p.add_argument("--topology", choices=KINDS, default="campus")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH", help="also write the JSON here")
    p.add_argument("--loss", type=float, default=0.0, help="datagram loss per link (0..1)")
    p.add_argument("--steady", type=float, default=STEADY_S, metavar="S",
                   help=f"steady-state window in simulated seconds (default {STEADY_S:g})")
    p.add_argument("--limit", type=float, default=LIMIT_S, metavar="S",
                   help=f"give up on the cold start after S simulated seconds ({LIMIT_S:g})")
    p.add_argument("--enrolled", action="store_true",
                   help="every node has its LDevID at t=0 (no BRSKI)")
    p.add_argument("--asa-flood", type=float, default=0.0, metavar="S",
                   help="every node also floods one objective every S seconds (an ASA)")
    p.add_argument("--repeat-loop-count", type=int, default=1, metavar="K",
                   help="repeat the cached AN_join_registrar on a new channel with loop count "
                        "K (default 1, as grasp/part.py does; 255: the repeat before the fix)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-node memory walk")
    p.set_defaults(func=_sim)

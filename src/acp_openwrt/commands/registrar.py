"""`acpctl registrar`: the node's registrar (domain, port, enrolled nodes, recent refusals)."""
from __future__ import annotations

import argparse
import time

from . import add_json_flag, node_request, print_json, print_table

FIELDS = ("running", "domain", "acp_node_name", "address", "port", "namespace", "registrar_id",
          "enrolled", "default_masa_url", "flooding", "floods_sent", "last_flood_age", "problem")


def cmd_status(args: argparse.Namespace) -> int:
    status = node_request(args, "registrar")
    if args.json:
        print_json(status)
        return 0
    for key in FIELDS:
        value = status.get(key)
        print(f"{key:17} {'-' if value is None else value}")
    counters = status.get("counters") or {}
    if counters:
        print()
        print_table(("request", "count"), sorted(counters.items()))
    refusals = status.get("recent_refusals") or []
    if refusals:
        print()
        now = time.time()
        print_table(("age (s)", "who", "HTTP", "reason"),
                    [(round(now - r["time"]), r["who"], r["status"], r["reason"])
                     for r in refusals])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("registrar", help="the ACP registrar on this node")
    add_json_flag(parser)
    parser.set_defaults(func=cmd_status)

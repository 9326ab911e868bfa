"""`acpctl rpl [--json]`: the node's RPL state (role, rank, DODAG, parents, children, routes)."""
from __future__ import annotations

import argparse
from typing import Any

from . import CommandError, add_json_flag, node_request, print_json, print_table


def show(status: dict[str, Any]) -> None:
    """The human view: a summary, then parents, children and routes as tables."""
    if not isinstance(status, dict):
        raise CommandError("acpd sent an RPL status that is not an object")
    summary = [("role", status.get("role")), ("rank", status.get("rank")),
               ("dodag id", status.get("dodag_id")), ("version", status.get("version")),
               ("address", status.get("address")), ("prefix", status.get("prefix")),
               ("implementation", status.get("implementation"))]
    if status.get("reason"):
        summary.append(("reason", status["reason"]))
    if status.get("pid") is not None:
        summary.append(("pid", status["pid"]))
    for key, value in summary:
        if value is not None or key in ("role", "rank"):
            print(f"{key + ':':<16}{'-' if value is None else value}")
    parents = status.get("parents") or []
    if parents:
        print()
        print_table(["PARENT", "INTERFACE", "RANK", "PREFERRED"],
                    [(p.get("address"), p.get("ifname"), p.get("rank"),
                      "yes" if p.get("preferred") else "") for p in parents])
    children = status.get("children") or []
    if children:
        print()
        print_table(["CHILD", "INTERFACE", "TARGETS"],
                    [(ch.get("address"), ch.get("ifname"), " ".join(ch.get("targets") or []))
                     for ch in children])
    routes = status.get("routes") or []
    if routes:
        print()
        print_table(["ROUTE", "KIND", "VIA", "INTERFACE"],
                    [(r.get("prefix"), r.get("kind"), r.get("gateway"), r.get("ifname"))
                     for r in routes])


def cmd_rpl(args: argparse.Namespace) -> int:
    status = node_request(args, "rpl")
    if args.json:
        print_json(status)
    else:
        show(status)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    rpl = sub.add_parser("rpl", help="RPL state: role, rank, DODAG, parents, children, routes")
    add_json_flag(rpl)
    rpl.set_defaults(func=cmd_rpl)

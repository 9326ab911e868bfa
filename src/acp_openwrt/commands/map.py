"""`acpctl map [--json]`: the whole ACP as seen from this node (control command `map`):
nodes, secure channels and RPL parents, gathered over the ACP GRASP (docs/acpmap.md)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..logsafe import logsafe
from . import CommandError, add_json_flag, node_request, print_json, print_table


def _label(node: dict[str, Any]) -> str:
    name = node.get("name")
    return f"{node.get('address')} ({logsafe(name, 80)})" if name else str(node.get("address"))


def rpl_tree(answer: dict[str, Any]) -> list[str]:
    """The RPL DODAG as an indented tree: each node under its preferred parent; nodes whose
    parent is not on the map (or who have none) start a tree of their own."""
    nodes = {n["address"]: n for n in answer.get("nodes") or [] if n.get("reached")}
    children: dict[str | None, list[str]] = {}
    for address, node in nodes.items():
        parent = node.get("parent")
        children.setdefault(parent if parent in nodes else None, []).append(address)
    lines: list[str] = []
    seen: set[str] = set()

    def walk(address: str, depth: int) -> None:
        if address in seen:  # a loop in what nodes report: draw each node once
            return
        seen.add(address)
        node = nodes[address]
        extra = " ".join(f"[{r}]" for r in node.get("roles") or [])
        rank = node.get("rank")
        lines.append(f"{'  ' * depth}{_label(node)} {node.get('state') or '-'}"
                     f"{'' if rank is None else f' rank {rank}'}{' ' + extra if extra else ''}")
        for child in children.get(address, []):
            walk(child, depth + 1)

    for top in children.get(None, []):
        walk(top, 0)
    for address in nodes:  # left over: parent loops
        walk(address, 0)
    return lines


def show(answer: dict[str, Any]) -> None:
    if not isinstance(answer, dict) or not isinstance(answer.get("nodes"), list):
        raise CommandError("acpd sent a map that is not one")
    nodes = answer["nodes"]
    reached = sum(1 for n in nodes if n.get("reached"))
    print(f"ACP map from {answer.get('origin')}: {len(nodes)} nodes ({reached} answered), "
          f"{len(answer.get('channels') or [])} channels, {answer.get('duration_s')} s"
          f"{'' if answer.get('complete') else ' (incomplete)'}")
    print()
    print_table(["NODE", "NAME", "ROLES", "STATE", "RANK", "PARENT", "HOPS", "ERROR"],
                [(n.get("address"), n.get("name"), ",".join(n.get("roles") or []) or None,
                  n.get("state"), n.get("rank"), n.get("parent"), n.get("hops"),
                  n.get("error")) for n in nodes])
    channels = answer.get("channels") or []
    if channels:
        print()
        print_table(["CHANNEL", "PEER", "CONFIRMED"],
                    [(c.get("a"), c.get("b"), "yes" if c.get("confirmed") else "one end")
                     for c in channels])
    tree = rpl_tree(answer)
    if tree:
        print()
        print("RPL (preferred parents):")
        for line in tree:
            sys.stdout.write(f"  {line}\n")


def cmd_map(args: argparse.Namespace) -> int:
    answer = node_request(args, "map")
    if args.json:
        print_json(answer)
    else:
        show(answer)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("map", help="the whole ACP: nodes, channels, RPL parents")
    add_json_flag(parser)
    parser.set_defaults(func=cmd_map)

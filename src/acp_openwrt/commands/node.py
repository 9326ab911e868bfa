"""`acpctl status`, `acpctl interfaces`, `acpctl neighbors`: what the node holds right now."""
from __future__ import annotations

import argparse
from typing import Any

from . import add_json_flag, node_request, print_json, print_table
from .status_view import status_lines


def _show_status(data: dict[str, Any]) -> None:
    print(f"acpd {data.get('version', '?')}, up {data.get('uptime_s', 0)} s")
    for label, text in status_lines(data):
        print(f"{label:<10} {text}")


def cmd_status(args: argparse.Namespace) -> int:
    data = node_request(args, "status")
    if args.json:
        print_json(data)
    else:
        _show_status(data)
    return 0


def cmd_interfaces(args: argparse.Namespace) -> int:
    data = node_request(args, "interfaces")
    if args.json:
        print_json(data)
    else:
        print_table(("HOST", "METHOD", "DULL", "LINK-LOCAL", "UP(s)"),
                    [(e["host_interface"], e["method"], e["dull_interface"], e["link_local"],
                      e["up_for_s"]) for e in data])
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    data = node_request(args, "neighbors")
    if args.json:
        print_json(data)
    else:
        print_table(("PEER", "INTERFACE", "METHODS", "PORT", "TTL(s)", "FLOODS", "CONFIRMED"),
                    [(e["peer"], e["interface"], ",".join(e["methods"]), e["port"], e["ttl_s"],
                      e["floods_heard"], e.get("confirmed") or "-") for e in data])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (("status", cmd_status, "node identity, namespaces and parts"),
                             ("interfaces", cmd_interfaces, "host interfaces adopted into DULL"),
                             ("neighbors", cmd_neighbors, "the adjacency table (AN_ACP heard)")):
        parser = sub.add_parser(name, help=text)
        add_json_flag(parser)
        parser.set_defaults(func=func)

"""`acpctl connect [--json]`: the node's ACP connect interfaces, subnets and IPv4 relays."""
from __future__ import annotations

import argparse
from typing import Any

from . import CommandError, add_json_flag, node_request, print_json, print_table


def show(status: dict[str, Any]) -> None:
    """One row per connect interface, then one per relay."""
    if not isinstance(status, dict) or not isinstance(status.get("connects"), list):
        raise CommandError("acpd sent an ACP connect status that is not an object with connects")
    if not status.get("active"):
        print(f"ACP connect inactive: {status.get('reason') or 'not started'}")
    connects = status["connects"]
    if not connects:
        print("no ACP connect interfaces configured")
        return
    print_table(["NAME", "DEVICE", "STATE", "SUBNET", "ROUTER", "SOURCE", "RA SENT", "RS"],
                [(c.get("name"), c.get("device"), c.get("state"), c.get("subnet"),
                  c.get("router"), c.get("source"), (c.get("ra") or {}).get("ra_sent"),
                  (c.get("ra") or {}).get("rs_received")) for c in connects])
    errors = [(c.get("name"), c.get("error")) for c in connects if c.get("error")]
    for name, error in errors:
        print(f"{name}: {error}")
    relays = [(c.get("name"), r) for c in connects for r in c.get("relays") or []]
    if relays:
        print()
        print_table(["CONNECT", "LISTEN", "TARGET", "PROTO", "ACTIVE", "MAX", "REFUSED",
                     "IDLE CLOSED"],
                    [(name, r.get("listen"), r.get("target"), r.get("protocol"), r.get("active"),
                      r.get("max_connections"), (r.get("counters") or {}).get("refused", 0),
                      (r.get("counters") or {}).get("idle_closed", 0)) for name, r in relays])


def cmd_connect(args: argparse.Namespace) -> int:
    status = node_request(args, "connect")
    if args.json:
        print_json(status)
    else:
        show(status)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("connect", help="ACP connect interfaces: subnets, RAs, IPv4 relays")
    add_json_flag(parser)
    parser.set_defaults(func=cmd_connect)

"""`acpctl proxy`: the BRSKI join proxy: registrar in use, listeners, circuits."""
from __future__ import annotations

import argparse

from . import add_json_flag, node_request, print_json, print_table


def cmd_proxy(args: argparse.Namespace) -> int:
    data = node_request(args, "proxy")
    if args.json:
        print_json(data)
        return 0
    registrar = data.get("registrar")
    print(f"active    {data.get('active')} (user {data.get('user')}, pid {data.get('pid')}, "
          f"restarts {data.get('restarts')})")
    print("registrar " + (f"[{registrar['address']}]:{registrar['port']}" if registrar
                          else "none known"))
    print_table(("INTERFACE", "ADDRESS", "PORT", "SERVING"),
                [(listener["ifname"], listener["address"], listener["port"], listener["serving"])
                 for listener in data.get("listeners", [])])
    conns = data.get("connections") or []
    if conns:
        print()
        print_table(sorted(conns[0]), [[c.get(k) for k in sorted(conns[0])] for c in conns])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("proxy", help="the BRSKI join proxy (registrar, listeners, circuits)")
    add_json_flag(parser)
    parser.set_defaults(func=cmd_proxy)

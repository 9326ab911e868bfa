"""`acpctl channels [--json]`: the node's secure channels (one line per neighbour and link)."""
from __future__ import annotations

import argparse
from typing import Any

from . import CommandError, add_json_flag, node_request, print_json, print_table

HEADERS = ("INTERFACE", "PEER", "LINK", "PEER NODE NAME", "STATE", "ROLE", "SA AGE", "BYTES",
           "LAST ERROR")


def _age(seconds: Any) -> str | None:
    if not isinstance(seconds, int):
        return None
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def rows(entries: list[dict[str, Any]]) -> list[list[Any]]:
    return [[e.get("interface"), e.get("peer"), e.get("dull_interface"),
             e.get("peer_node_name"), e.get("state"), e.get("role"), _age(e.get("sa_age")),
             e.get("bytes"), e.get("last_error")] for e in entries]


def cmd_channels(args: argparse.Namespace) -> int:
    entries = node_request(args, "channels")
    if not isinstance(entries, list):
        raise CommandError("the node sent an unexpected answer to 'channels'")
    if args.json:
        print_json(entries)
    elif not entries:
        print("no secure channels")
    else:
        print_table(HEADERS, rows(entries))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("channels", help="list the secure channels to ACP neighbours")
    add_json_flag(parser)
    parser.set_defaults(func=cmd_channels)

"""acpctl: the operator's command line.

Every failure the operator can cause (a bad name, an unreadable file, no acpd behind the socket)
is one line on stderr and exit status 2; status 1 is kept for "the node said no".
Subcommands live in `acp_openwrt.commands`, one module each (listed in COMMANDS).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .commands import EXIT_USAGE, CommandError

DEFAULT_SOCKET = Path("/var/run/acp/acpd.sock")
# Modules under acp_openwrt.commands, in help order.
COMMANDS = ("node", "diagnose", "channels", "rpl", "map", "connect", "brski", "proxy",
            "registrar", "identity", "grasp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acpctl", description="Operate an ACP node.")
    parser.add_argument("--socket", type=Path,
                        default=Path(os.environ.get("ACP_SOCKET", DEFAULT_SOCKET)),
                        help="the node's control socket (default $ACP_SOCKET or %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"acpctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

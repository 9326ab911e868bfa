"""acpctl's subcommands, one module each; every module offers `register(subparsers)`.

A subcommand sets `func(args) -> int` as its default. Operator errors are raised as
CommandError (one line on stderr, exit status 2). Output helpers keep the human and the
`--json` views of one command built from the same data.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..logsafe import logsafe

EXIT_USAGE = 2
EXIT_REFUSED = 1
TABLE_CELL_LIMIT = 1000


class CommandError(Exception):
    """An operator error: printed as one line, exit status 2."""


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Left-aligned columns; None prints as '-'. Cells are escaped (logsafe): many hold what
    peers sent (names from certificates, reasons, methods), which must not move the cursor
    or start a line of its own on the operator's terminal."""
    text = [[("-" if cell is None else logsafe(cell, TABLE_CELL_LIMIT)) for cell in row]
            for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    for row in [list(headers)] + text:
        cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


def node_request(args: argparse.Namespace, cmd: str, **params: Any) -> Any:
    """Ask the node behind `acpctl --socket` (or the default socket); errors are CommandError."""
    from ..control.client import ControlClientError, request
    try:
        return request(args.socket, cmd, **params)
    except ControlClientError as exc:
        raise CommandError(str(exc)) from None


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")

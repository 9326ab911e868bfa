"""`acpctl grasp decode HEX`: one GRASP message from a capture, as JSON."""
from __future__ import annotations

import argparse

from . import CommandError, print_json


def cmd_decode(args: argparse.Namespace) -> int:
    from ..grasp import GraspDecodeError, decode_hex_to_json
    text = args.hex
    if text == "-":
        import sys
        text = sys.stdin.read()
    try:
        print_json(decode_hex_to_json(text))
    except GraspDecodeError as exc:
        raise CommandError(f"not a GRASP message: {exc}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    grasp = sub.add_parser("grasp", help="GRASP tools")
    gsub = grasp.add_subparsers(dest="grasp_command", required=True)
    dec = gsub.add_parser("decode", help="decode one GRASP message given in hex (- reads stdin)")
    dec.add_argument("hex", help="the CBOR bytes in hex (spaces, newlines, 0x or h'...' allowed)")
    dec.set_defaults(func=cmd_decode)

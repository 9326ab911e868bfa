"""acpctl: the operator's command line.

Every failure the operator can cause (a bad name, an unreadable file) is one line on stderr
and exit status 2; status 1 is kept for "the node said no".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2


class CommandError(Exception):
    """An operator error: printed as one line, exit status 2."""


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def cmd_identity(args: argparse.Namespace) -> int:
    from .identity.address import AddressError
    from .identity.node_name import NodeNameError, parse_acp_node_name
    from .identity.summary import identity_summary

    if args.cert is not None:
        from .identity.certificate import CertificateError, certificate_node_name, load_certificate
        try:
            cert = load_certificate(Path(args.cert))
            found = certificate_node_name(cert)
        except (CertificateError, OSError) as exc:
            raise CommandError(f"{args.cert}: {getattr(exc, 'strerror', None) or exc}") from exc
        if found is None:
            raise CommandError(f"{args.cert}: certificate carries no acp-node-name")
        name, carrier = found
        try:
            summary = identity_summary(name)
        except AddressError as exc:
            raise CommandError(f"{args.cert}: {exc}") from exc
        summary["carrier"] = carrier
        _print_json(summary)
        return 0
    if args.name is None:
        raise CommandError("give an acp-node-name or --cert FILE")
    try:
        _print_json(identity_summary(parse_acp_node_name(args.name)))
    except (NodeNameError, AddressError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acpctl", description="Operate an ACP node.")
    sub = parser.add_subparsers(dest="command", required=True)
    ident = sub.add_parser("identity", help="decode an acp-node-name or a certificate's identity")
    ident.add_argument("name", nargs="?", help="acp-node-name, e.g. fd89...+area51@acp.example.com")
    ident.add_argument("--cert", metavar="FILE", help="read the acp-node-name from a certificate")
    ident.set_defaults(func=cmd_identity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"acpctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

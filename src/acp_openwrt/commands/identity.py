"""`acpctl identity NAME | --cert FILE`: what an acp-node-name means (address, scheme, prefix)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import CommandError, print_json


def cmd_identity(args: argparse.Namespace) -> int:
    from ..identity.address import AddressError
    from ..identity.node_name import NodeNameError, parse_acp_node_name
    from ..identity.summary import identity_summary

    if args.cert is not None:
        from ..identity.certificate import CertificateError, certificate_node_name, load_certificate
        try:
            found = certificate_node_name(load_certificate(Path(args.cert)))
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
        print_json(summary)
        return 0
    if args.name is None:
        raise CommandError("give an acp-node-name or --cert FILE")
    try:
        print_json(identity_summary(parse_acp_node_name(args.name)))
    except (NodeNameError, AddressError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ident = sub.add_parser("identity", help="decode an acp-node-name or a certificate's identity")
    ident.add_argument("name", nargs="?", help="acp-node-name, e.g. fd89...+area51@acp.example.com")
    ident.add_argument("--cert", metavar="FILE", help="read the acp-node-name from a certificate")
    ident.set_defaults(func=cmd_identity)

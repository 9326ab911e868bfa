"""`acpctl brski [status]`: the node's pledge/renewal state; `acpctl brski voucher FILE`:
verify and show a voucher or voucher-request (CMS, DER or base64) offline."""
from __future__ import annotations

import argparse
import base64
import binascii
import json
from pathlib import Path
from typing import Any

from . import CommandError, add_json_flag, node_request, print_json, print_table


def cmd_enroll(args: argparse.Namespace) -> int:
    result = node_request(args, "enroll")
    if args.json:
        print_json(result)
    elif "renewed" in result:
        print("LDevID renewed" if result["renewed"] else f"renewal failed: {result.get('error')}")
    else:
        print(f"trying {result.get('proxies_tried_now', 0)} join proxies now "
              "(see acpctl brski)")
    return 0 if result.get("renewed", True) else 1


def cmd_status(args: argparse.Namespace) -> int:
    status = node_request(args, "brski")
    if args.json:
        print_json(status)
        return 0
    for key in ("state", "acp_node_name", "attempts", "last_refusal", "est_server",
                "next_renewal", "renewal_failures"):
        print(f"{key:17} {status.get(key) if status.get(key) is not None else '-'}")
    proxies = status.get("proxies") or []
    if proxies:
        print()
        print_table(("proxy", "port", "link", "failures", "next try (s)", "last refusal"),
                    [(p["address"], p["port"], p["ifname"], p["failures"], p["next_try_in"],
                      p["last_refusal"]) for p in proxies])
    return 0


def _read(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}") from None
    if data[:1] == b"\x30":
        return data
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CommandError(f"{path}: neither DER nor base64") from None


def cmd_voucher(args: argparse.Namespace) -> int:
    from ..brski import cms
    from ..brski.tls import chain_problem
    from ..identity.certificate import CertificateError, load_certificates
    try:
        signed = cms.verify(_read(args.file))
    except cms.CmsError as exc:
        raise CommandError(f"{args.file}: {exc}") from None
    out: dict[str, Any] = {"content_type": signed.content_type,
           "signer": signed.signer.subject.rfc4514_string(),
           "signing_time": signed.signing_time.isoformat() if signed.signing_time else None}
    if args.anchor:
        try:
            anchors = load_certificates(args.anchor)
        except CertificateError as exc:
            raise CommandError(str(exc)) from None
        problems = [chain_problem(signed.signer, a, signed.certificates) for a in anchors]
        out["signer_trusted"] = not all(problems)
        out["trust_problem"] = None if out["signer_trusted"] else problems[0]
    try:
        out["content"] = json.loads(signed.content)
    except ValueError:
        out["content"] = signed.content.decode("utf-8", "replace")
    print_json(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    brski = sub.add_parser("brski", help="BRSKI: pledge/renewal state, voucher inspection")
    add_json_flag(brski)
    brski.set_defaults(func=cmd_status)
    bsub = brski.add_subparsers(dest="brski_command")
    status = bsub.add_parser("status", help="the node's pledge / renewal state (default)")
    add_json_flag(status)
    status.set_defaults(func=cmd_status)
    enroll = bsub.add_parser("enroll", help="enrol now (try every proxy heard) or, when "
                             "enrolled, renew the LDevID now")
    add_json_flag(enroll)
    enroll.set_defaults(func=cmd_enroll)
    voucher = bsub.add_parser("voucher", help="verify and show a CMS voucher(-request) file")
    voucher.add_argument("file", help="DER or base64 CMS SignedData")
    voucher.add_argument("--anchor", metavar="PEM", help="check the signer against these CAs")
    voucher.set_defaults(func=cmd_voucher)

"""`acpctl diagnose [--json] [--cert FILE [--key FILE]]`: walk the node's chain and name the
first broken link.

Asks acpd every control command the diagnosis reads, adds what only this box can see (which
namespaces exist, the LDevID's validity dates, whether its key is its own) and prints
acp_openwrt.diagnosis's checks.
Exit status: 0 nothing failed (warnings allowed), 1 something failed, 2 acpd unreachable.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from ..diagnosis import CertificateDates, Diagnosis, Verdict, diagnose
from . import EXIT_REFUSED, CommandError, add_json_flag, node_request, print_json, print_table

# What diagnose reads, beyond `status`; a command the node lacks is simply not used.
COMMANDS = ("interfaces", "neighbors", "channels", "rpl", "brski", "proxy")
MARKS = {Verdict.OK: "ok", Verdict.WARN: "WARN", Verdict.FAIL: "FAIL", Verdict.SKIP: "-"}


def gather(args: argparse.Namespace) -> dict[str, Any]:
    """Every answer, or the CommandError in its place; `status` failing means no node at all."""
    try:
        answers: dict[str, Any] = {"status": node_request(args, "status")}
    except CommandError as exc:
        raise CommandError(f"cannot diagnose, acpd unreachable: {exc}") from None
    for cmd in COMMANDS:
        try:
            answers[cmd] = node_request(args, cmd)
        except CommandError as exc:
            answers[cmd] = exc
    return answers


def read_certificate_dates(path: str) -> CertificateDates:
    """notBefore/notAfter of the LDevID file (acpctl runs on the node's own box)."""
    from ..identity.certificate import load_certificates, validity
    cert = load_certificates(path)[0]  # CertificateError is a ValueError: one line
    return CertificateDates(*validity(cert))


def check_key_file(cert_path: str, key_path: str) -> str | None:
    """Why the key file is not the LDevID's own key, or None (PermissionError passes up)."""
    from ..brski.store import key_problem
    from ..identity.certificate import load_certificates
    return key_problem(load_certificates(cert_path)[0], key_path)


def local_namespaces() -> list[str] | None:
    """Names under /run/netns, or None when they cannot be listed (then acpd's word counts)."""
    try:
        from ..netns import list_namespaces
        return list_namespaces()
    except Exception:  # pyroute2 missing or /run/netns unreadable: not a diagnosis failure
        return None


def show(result: Diagnosis) -> None:
    print_table(("CHECK", "RESULT", "DETAIL"),
                [(c.name, MARKS[c.verdict], c.detail) for c in result.checks])
    print()
    broken = result.first_broken
    if broken is None:
        warnings = sum(c.verdict is Verdict.WARN for c in result.checks)
        print("no broken link found" + (f" ({warnings} warning(s) above)" if warnings else ""))
        return
    print(f"first broken link: {broken.name}: {broken.detail}")
    if broken.hint:
        print(f"what to do: {broken.hint}")


def cmd_diagnose(args: argparse.Namespace) -> int:
    answers = gather(args)
    result = diagnose(answers, dt.datetime.now(dt.UTC),
                      read_certificate=read_certificate_dates,
                      namespaces_present=local_namespaces(),
                      certificate_path=str(args.cert) if args.cert else None,
                      check_key=check_key_file, key_path=str(args.key) if args.key else None)
    if args.json:
        print_json(result.to_dict())
    else:
        show(result)
    sys.stdout.flush()
    return 0 if result.healthy else EXIT_REFUSED


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("diagnose", help="walk the node's chain and name the first broken link")
    add_json_flag(parser)
    parser.add_argument("--cert", metavar="FILE",
                        help="the LDevID to check (default: the one acpd's BRSKI part reports)")
    parser.add_argument("--key", metavar="FILE",
                        help="its private key, checked to be the LDevID's own (default: the "
                             "one acpd reports, unless --cert is given)")
    parser.set_defaults(func=cmd_diagnose)

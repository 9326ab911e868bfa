"""`acpctl registrar`: the node's registrar (domain, port, enrolled nodes, recent refusals),
its revocations (`revoke NODE-NAME|SERIAL`, `revoked`; brski/registrar/revocation.py, through
the running acpd, which serves the CRL), and its state as one file (`backup FILE`,
`restore FILE`; brski/registrar/backup.py).

Backup and restore work on the files, not through acpd: a backup must be possible while the
registrar runs (SQLite's online backup is consistent against a concurrent writer), and a
restore must happen while it does not (it replaces the CA and the database under it).
"""
from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

from . import CommandError, add_json_flag, node_request, print_json, print_table

FIELDS = ("running", "domain", "acp_node_name", "address", "port", "namespace", "registrar_id",
          "enrolled", "default_masa_url", "flooding", "floods_sent", "last_flood_age",
          "crl_url", "crl_number", "revoked", "registrar_id_conflict", "problem")


def cmd_status(args: argparse.Namespace) -> int:
    status = node_request(args, "registrar")
    if args.json:
        print_json(status)
        return 0
    for key in FIELDS:
        value = status.get(key)
        print(f"{key:17} {'-' if value is None else value}")
    worker = status.get("worker")
    if worker:   # the process doing the TLS and signing (brski/registrar/worker.py)
        print(f"{'worker':17} {_worker_line(worker)}")
        if worker.get("last_error"):
            print(f"{'worker_error':17} {worker['last_error']}")
    others = status.get("other_registrars") or []
    if others:
        print()
        now = time.time()
        print_table(("other registrar", "port", "Registrar-ID", "heard (s ago)"),
                    [(o["address"], o["port"], o["registrar_id"] or "-",
                      round(now - o["last_heard"])) for o in others])
    counters = status.get("counters") or {}
    if counters:
        print()
        print_table(("request", "count"), sorted(counters.items()))
    refusals = status.get("recent_refusals") or []
    if refusals:
        print()
        now = time.time()
        print_table(("age (s)", "who", "HTTP", "reason"),
                    [(round(now - r["time"]), r["who"], r["status"], r["reason"])
                     for r in refusals])
    return 0


def _worker_line(worker: dict[str, object]) -> str:
    now = f"pid {worker['pid']}" if worker.get("pid") else "not running (starts on demand)"
    return (f"{now}; starts {worker.get('starts', 0)}, crashes {worker.get('crashes', 0)}, "
            f"connections {worker.get('connections', 0)}, probes {worker.get('probes', 0)}")


def _revoked_rows(entries: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(e["serial"], e["acp_node_name"] or "-",
             time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(e["revoked"]))),  # type: ignore[arg-type]
             e["reason"]) for e in entries]


def cmd_revoke(args: argparse.Namespace) -> int:
    params = {"target": args.target}
    if args.reason:
        params["reason"] = args.reason
    answer = node_request(args, "revoke", **params)
    if args.json:
        print_json(answer)
        return 0
    if not answer["revoked"]:
        print(f"{args.target}: already revoked")
    else:
        print_table(("serial", "acp-node-name", "revoked (UTC)", "reason"),
                    _revoked_rows(answer["revoked"]))
    print(f"CRL number {answer['crl_number']}: nodes drop the revoked certificates within "
          f"their crl_refresh")
    return 0


def cmd_revoked(args: argparse.Namespace) -> int:
    answer = node_request(args, "revoked")
    if args.json:
        print_json(answer)
        return 0
    print(f"crl_url    {answer['crl_url'] or '-'}")
    print(f"crl_number {'-' if answer['crl_number'] is None else answer['crl_number']}")
    if answer["revoked_names"]:
        print(f"names      {', '.join(answer['revoked_names'])}")
    if answer["revoked"]:
        print()
        print_table(("serial", "acp-node-name", "revoked (UTC)", "reason"),
                    _revoked_rows(answer["revoked"]))
    else:
        print("no certificate revoked")
    return 0


DEFAULT_CONFIG = Path("/etc/config/acp")


def _config(args: argparse.Namespace) -> object:
    """The node's configuration (the registrar's directory, domain and CA files)."""
    from ..config import ConfigError
    from ..config.schema import load_config
    path = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}") from None
    if args.dir is not None:
        import dataclasses
        config = dataclasses.replace(config, registrar_dir=args.dir)
    return config


def _acpd_answers(path: Path) -> bool:
    """True when a process listens on the control socket (a stale socket file is no acpd)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _show(info: object, what: str, target: Path, json_out: bool) -> None:
    data = {"file": str(target), "domain": info.domain,  # type: ignore[attr-defined]
            "registrar_id": f"{info.registrar_id:#x}",  # type: ignore[attr-defined]
            "allocations": info.nodes, "domain_ca": info.ca_subject}  # type: ignore[attr-defined]
    if json_out:
        print_json({what: True, **data})
        return
    for key, value in data.items():
        print(f"{key:13} {value}")


def cmd_backup(args: argparse.Namespace) -> int:
    from ..brski.registrar.backup import BackupError, write_backup
    config = _config(args)
    ca_cert = getattr(config, "registrar_ca_cert", None)
    ca_key = getattr(config, "registrar_ca_key", None)
    try:
        info = write_backup(Path(config.registrar_dir), Path(args.file),  # type: ignore
                            ca_cert=ca_cert, ca_key=ca_key, force=args.force)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    _show(info, "backup", Path(args.file), args.json)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ..brski.registrar.backup import BackupError, restore_backup
    from ..config import CONTROL_SOCKET_NAME
    config = _config(args)
    sockets = {Path(args.socket), Path(config.run_dir) / CONTROL_SOCKET_NAME}  # type: ignore
    running = sorted(str(p) for p in sockets if _acpd_answers(p))
    if running:
        raise CommandError(f"acpd answers on {running[0]}: stop it before restoring "
                           f"(the registrar would keep using the old state)")
    try:
        info = restore_backup(Path(args.file), Path(config.registrar_dir),  # type: ignore
                              domain=config.registrar_domain, force=args.force)  # type: ignore
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    _show(info, "restored", Path(config.registrar_dir), args.json)  # type: ignore
    return 0


def _file_command(sub: argparse._SubParsersAction, name: str, help_text: str,
                  force_help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("file", help="the backup file")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help=f"acpd's configuration (default {DEFAULT_CONFIG} if present)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the registrar directory (default: registrar_dir of the config)")
    parser.add_argument("--force", action="store_true", help=force_help)
    add_json_flag(parser)
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("registrar", help="the ACP registrar on this node")
    add_json_flag(parser)
    parser.set_defaults(func=cmd_status)
    actions = parser.add_subparsers(dest="action")
    _file_command(actions, "backup", "write the registrar's state (CA key included) to one "
                  "file, mode 0600", "replace an existing file").set_defaults(func=cmd_backup)
    _file_command(actions, "restore", "install a backup into a stopped registrar",
                  "replace an existing CA and database").set_defaults(func=cmd_restore)
    revoke = actions.add_parser("revoke", help="revoke a node (every certificate issued to "
                                "an acp-node-name, which gets none again) or one certificate "
                                "(hex serial); the CRL lists it at once")
    revoke.add_argument("target", help="acp-node-name or certificate serial (hex)")
    revoke.add_argument("--reason", default="", help="recorded with the revocation")
    add_json_flag(revoke)
    revoke.set_defaults(func=cmd_revoke)
    for name in ("revoked", "list"):
        listing = actions.add_parser(name, help="the revoked certificates and names")
        add_json_flag(listing)
        listing.set_defaults(func=cmd_revoked)

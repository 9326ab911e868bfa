"""acp-lab: the test bench's command line, one subcommand per bench part.

Each subcommand registers itself through an `add_<name>_parser(subparsers)` function that sets
`func`; `main` only dispatches, so adding a subcommand never touches another's code.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Exit statuses of `acp-lab vm` when the guest, not the command, is at fault.
EXIT_UNAVAILABLE = 2
EXIT_TIMEOUT = 124
EXIT_GUEST_FAILED = 125
# `acp-lab topo`: 2 for bad arguments (or no root), 1 when building the topology failed.
EXIT_USAGE = 2
EXIT_FAILED = 1
MAX_NODES = 32
# Where `topo up` notes what it built, so `topo list` can name kind and size; /run goes away
# with a reboot, as the namespaces do.
TOPO_STATE_DIR = Path("/run/acp-lab/topologies")
_RANDOM_PREFIX = re.compile(r"^lab[0-9a-f]{6}$")  # what lab.topology_spec.random_prefix makes


def _vm(args: argparse.Namespace) -> int:
    from acp_openwrt.lab.vm import GuestFailure, GuestTimeout, GuestUnavailable, run_in_guest

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("acp-lab vm: no command given (usage: acp-lab vm [--timeout S] -- CMD ARGS...)",
              file=sys.stderr)
        return EXIT_UNAVAILABLE

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    try:
        result = run_in_guest(command, timeout=args.timeout, on_output=write)
    except BrokenPipeError:  # our reader left (`| head`); the guest is already gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except GuestUnavailable as e:
        print(f"acp-lab vm: guest unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (GuestTimeout, GuestFailure) as e:
        print(f"acp-lab vm: {e}", file=sys.stderr)
        if e.console:
            print(f"guest console (tail):\n{e.console}", file=sys.stderr)
        return EXIT_TIMEOUT if isinstance(e, GuestTimeout) else EXIT_GUEST_FAILED
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, data in result.outputs.items():
            (args.out / name).write_bytes(data)
    if args.verbose:
        print(f"acp-lab vm: boot {result.boot_seconds:.1f} s, total {result.total_seconds:.1f} s,"
              f" exit status {result.status}", file=sys.stderr)
    return result.status


def add_vm_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vm", help="run a command inside a QEMU guest with Debian's kernel (kernel IPsec)",
        description="Run CMD as root inside a QEMU guest booted with Debian's kernel, in the "
                    "same working directory (the host's / read-only with a tmpfs overlay). "
                    "Exits with CMD's status; 2 if no guest can be had, 124 on timeout, 125 "
                    "if the guest failed. Cache: $ACP_LAB_CACHE or /var/cache/acp-lab.")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write here the files CMD leaves in $ACP_LAB_OUT (else they are lost)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="kill the guest after this long (default 600)")
    p.add_argument("-v", "--verbose", action="store_true", help="report boot and run times")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    p.set_defaults(func=_vm)


class TopoUsageError(Exception):
    """Bad arguments to `acp-lab topo`: one line, exit status 2."""


def _node_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise TopoUsageError(f"N must be a whole number of nodes, not {text!r}") from None
    if not 1 <= n <= MAX_NODES:
        raise TopoUsageError(f"N must be 1 to {MAX_NODES}, not {n}")
    return n


def _checked_prefix(text: str) -> str:
    from acp_openwrt.lab.topology_spec import TopologyError, check_prefix
    try:
        return check_prefix(text)
    except TopologyError as exc:
        raise TopoUsageError(str(exc)) from None


def _need_root() -> None:
    if os.geteuid() != 0:
        raise TopoUsageError("needs root (it creates and removes network namespaces)")


def _describe(topo: Any) -> list[dict[str, Any]]:
    """Per node: namespace and, per interface, the peer and the usable link-local address."""
    nodes = []
    for node in topo.nodes.values():
        interfaces = []
        for link in topo.links:
            if node.name not in (link.a.node, link.b.node):
                continue
            end, other = link.end_at(node.name), link.other(node.name)
            address = None if node.spec.switch else node.link_local(end.ifname)
            interfaces.append({"ifname": end.ifname, "bridge": end.bridge,
                               "peer": f"{other.node}/{other.ifname}", "link_local": address})
        nodes.append({"name": node.name, "namespace": node.netns, "interfaces": interfaces})
    return nodes


def _node_rows(nodes: list[dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for node in nodes:
        for i, ifc in enumerate(node["interfaces"] or [{}]):
            first = i == 0
            rows.append([node["name"] if first else "", node["namespace"] if first else "",
                         ifc.get("ifname"), ifc.get("peer"), ifc.get("link_local")])
    return rows


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _topo_up(args: argparse.Namespace) -> int:
    from acp_openwrt.commands import print_table
    from acp_openwrt.lab.topology import Topology, TopologyError, named, random_prefix
    from acp_openwrt.netns import list_namespaces

    try:
        spec = named(args.kind, _node_count(args.n), dad=args.dad)
    except TopologyError as exc:
        raise TopoUsageError(str(exc)) from None
    prefix = _checked_prefix(args.prefix) if args.prefix else random_prefix()
    _need_root()
    in_use = [n for n in list_namespaces() if n.startswith(prefix + "-")]
    if in_use:
        raise TopoUsageError(f"prefix {prefix} is in use ({len(in_use)} namespaces); "
                             f"free it with: acp-lab topo down --prefix {prefix}")
    topo = Topology(spec, prefix)
    try:
        topo.up()
        nodes = _describe(topo)
        record = {"prefix": prefix, "kind": args.kind, "n": int(args.n), "dad": args.dad,
                  "created": time.time(), "nodes": nodes}
        _save_record(args.state_dir, record)
    except BaseException as exc:
        topo.down()
        if isinstance(exc, (OSError, TopologyError)):  # TimeoutError is an OSError
            print(f"acp-lab topo up: {exc}; nothing was left behind", file=sys.stderr)
            return EXIT_FAILED
        raise
    if args.json:
        _print_json(record)
        return 0
    print(f"topology {prefix}: {args.kind} of {args.n} nodes (remove with: "
          f"acp-lab topo down --prefix {prefix})")
    print_table(["NODE", "NAMESPACE", "IFACE", "PEER", "LINK-LOCAL"], _node_rows(nodes))
    return 0


def _save_record(state_dir: Path, record: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{record['prefix']}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(state_dir / f"{record['prefix']}.json")


def _load_records(state_dir: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(state_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            records[str(data["prefix"])] = data
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged note only loses its kind and size in `list`
    return records


def _topo_down(args: argparse.Namespace) -> int:
    from acp_openwrt.netns import cleanup_stale

    prefix = _checked_prefix(args.prefix)
    _need_root()
    removed = cleanup_stale(prefix)
    had_record = (args.state_dir / f"{prefix}.json").exists()
    (args.state_dir / f"{prefix}.json").unlink(missing_ok=True)
    if removed:
        print(f"topology {prefix}: removed {len(removed)} namespaces: {', '.join(removed)}")
    elif had_record:
        print(f"topology {prefix}: its namespaces were already gone; record removed")
    else:
        print(f"topology {prefix}: nothing to remove")
    return 0


def topologies(state_dir: Path, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """What `topo list` shows: recorded topologies, and unrecorded random-prefix namespaces.

    The latter belong to a running test or are leftovers of a crashed one.
    """
    groups: dict[str, list[str]] = {}
    for name in namespaces:
        head = name.split("-", 1)[0]
        groups.setdefault(head, []).append(name)
    found = []
    for prefix, record in _load_records(state_dir).items():
        expected = [node["namespace"] for node in record.get("nodes", [])]
        present = groups.get(prefix, [])
        found.append({"prefix": prefix, "kind": record.get("kind"), "n": record.get("n"),
                      "namespaces": len(present),
                      "state": "up" if all(ns in present for ns in expected) else "broken"})
    for prefix, present in sorted(groups.items()):
        if _RANDOM_PREFIX.match(prefix) and not any(t["prefix"] == prefix for t in found):
            found.append({"prefix": prefix, "kind": None, "n": None,
                          "namespaces": len(present), "state": "unrecorded"})
    return found


def _topo_list(args: argparse.Namespace) -> int:
    from acp_openwrt.commands import print_table
    from acp_openwrt.netns import list_namespaces

    found = topologies(args.state_dir, list_namespaces())
    if args.json:
        _print_json(found)
    elif not found:
        print("no topologies")
    else:
        print_table(["PREFIX", "KIND", "N", "NAMESPACES", "STATE"],
                    [[t["prefix"], t["kind"], t["n"], t["namespaces"], t["state"]] for t in found])
    return 0


def _topo(args: argparse.Namespace) -> int:
    try:
        return int(args.topo_func(args))
    except TopoUsageError as exc:
        print(f"acp-lab topo {args.topo_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_topo_parser(sub: argparse._SubParsersAction) -> None:
    from acp_openwrt.lab.topology_spec import BUILDERS

    p = sub.add_parser(
        "topo", help="build, list and remove topologies of namespaces that stay up",
        description="Topologies of network namespaces joined by veth pairs, left up for manual "
                    "experiments. Node n1 of prefix P is namespace P-n1. Exit status 2 for bad "
                    "arguments or without root, 1 if building failed (nothing is left then).")
    p.add_argument("--state-dir", type=Path, default=TOPO_STATE_DIR, help=argparse.SUPPRESS)
    p.set_defaults(func=_topo)
    topo_sub = p.add_subparsers(dest="topo_command", required=True, metavar="COMMAND")

    up = topo_sub.add_parser("up", help="build a topology and leave it up",
                             description="Build KIND with N nodes (KIND: " + ", ".join(BUILDERS) +
                                         f"; N: 1 to {MAX_NODES}) and print its nodes, "
                                         "namespaces and link-local addresses.")
    up.add_argument("kind", metavar="KIND", help=", ".join(BUILDERS))
    up.add_argument("n", metavar="N", help="number of nodes")
    up.add_argument("--prefix", help="namespace prefix: a-z then a-z0-9, at most 10 "
                                     "(default: a random labXXXXXX)")
    up.add_argument("--dad", action="store_true",
                    help="keep duplicate address detection on (link-locals usable after ~1 s)")
    up.add_argument("--json", action="store_true", help="machine-readable JSON output")
    up.set_defaults(topo_func=_topo_up)

    down = topo_sub.add_parser("down", help="remove a topology and any leftovers of its prefix",
                               description="Remove every namespace named P-... (also acpd's "
                                           "P-n1-dull and the like) and the processes in them.")
    down.add_argument("--prefix", required=True, help="the topology's prefix")
    down.set_defaults(topo_func=_topo_down)

    lst = topo_sub.add_parser("list", help="list topologies built by `topo up` and lab leftovers")
    lst.add_argument("--json", action="store_true", help="machine-readable JSON output")
    lst.set_defaults(topo_func=_topo_list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acp-lab", description="acp-openwrt test bench")
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    add_vm_parser(sub)
    add_topo_parser(sub)
    from acp_openwrt.lab.sim.cli import add_sim_parser
    add_sim_parser(sub)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM into an exception so every `finally` (guests, namespaces, temp dirs) runs.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch; SIGTERM raises SystemExit meanwhile, and the caller's handler is put back after.

    Restoring matters when main() is called in-process (tests): a handler left behind would be
    inherited by a fork child of the caller, which would then raise into the caller's code.
    """
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())

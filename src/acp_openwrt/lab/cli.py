"""acp-lab: the test bench's command line, one subcommand per bench part.

Each subcommand registers itself through an `add_<name>_parser(subparsers)` function that sets
`func`; `main` only dispatches, so adding a subcommand never touches another's code.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

# Exit statuses of `acp-lab vm` when the guest, not the command, is at fault.
EXIT_UNAVAILABLE = 2
EXIT_TIMEOUT = 124
EXIT_GUEST_FAILED = 125


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
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="kill the guest after this long (default 600)")
    p.add_argument("-v", "--verbose", action="store_true", help="report boot and run times")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    p.set_defaults(func=_vm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acp-lab", description="acp-openwrt test bench")
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    add_vm_parser(sub)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM into an exception so every `finally` (guests, namespaces, temp dirs) runs.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

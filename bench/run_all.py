"""Every benchmark, one after the other, and a summary of targets against measured figures.

    sudo python3 bench/run_all.py [--only NAME ...] [--quick] [--results DIR]

Host benches run as child processes here; guest benches (secure channels need the guest
kernel's ESP) each boot one QEMU guest through lab.vm.run_in_guest, the machinery behind
`acp-lab vm`, which also hands back the files the bench wrote into $ACP_LAB_OUT. Each bench
writes its figures with `--json PATH`; this runner stores them as DIR/<name>.json (with where,
when and how long it ran, and its exit status) and writes DIR/summary.md: target vs measured,
with the date and the machine. A bench that fails is recorded as failed and the others still
run. Exit status 0 if every bench gave its figures (a missed target is a figure, not a failure:
brski_enrol exits 1 then, and still counts), 1 otherwise.
Figures only: nothing here belongs in the test suite.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_summary import summary_markdown

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
GUEST_OUT_ENV = "ACP_LAB_OUT"


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    where: str  # "host" or "guest"
    quick: tuple[str, ...] = ()  # arguments for --quick, a smoke run of the runner itself


BENCHES = (
    Bench("grasp_codec", (), "host", ("0.5",)),
    Bench("grasp_io", (), "host", ("--rates", "10000,30000", "--seconds", "1", "--runs", "100")),
    Bench("grasp_flood_memory", (), "host", ("--seconds", "3")),
    Bench("brski_enrol", (), "host", ("3",)),
    Bench("acpd_memory", (), "host", ("5",)),
    Bench("dull_flood", (), "host", ("--seconds", "10", "--interval", "2")),
    Bench("rpl_convergence", (), "host", ("--sizes", "10",)),
    Bench("sim_scale", ("--sizes", "10", "100", "300", "1000"), "host",
          ("--sizes", "10", "100", "--topologies", "campus")),
    Bench("channels", (), "guest", ("--runs", "1")),
    Bench("acp_formation", (), "guest", ("--mesh-size", "0")),
    Bench("channel_faults", (), "guest", ("--flood-seconds", "15", "--fakes", "1024")),
)


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "machine": platform.machine(), "python": platform.python_version()}


def guest_kernel() -> str:
    try:
        from acp_openwrt.lab.guest_kernel import ensure_guest_kernel
        return ensure_guest_kernel().version
    except Exception as e:  # reported, not fatal: the guest benches will fail on their own
        return f"unavailable ({e})"


def run_host(bench: Bench, args: tuple[str, ...], out: Path) -> int:
    argv = [sys.executable, str(BENCH_DIR / f"{bench.name}.py"), *args, "--json", str(out)]
    return subprocess.run(argv, cwd=ROOT).returncode


def run_guest(bench: Bench, args: tuple[str, ...], out: Path, timeout: float) -> int:
    from acp_openwrt.lab.vm import GuestError, GuestUnavailable, run_in_guest

    # The guest writes into $ACP_LAB_OUT (its share): the shell expands it there.
    script = (f'exec python3 bench/{bench.name}.py {" ".join(args)} '
              f'--json "${GUEST_OUT_ENV}/{bench.name}.json"')

    def echo(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    try:
        result = run_in_guest(["sh", "-c", script], cwd=str(ROOT), timeout=timeout,
                              extra_env={"PYTHONUNBUFFERED": "1"}, on_output=echo)
    except GuestUnavailable as e:
        print(f"run_all: {bench.name}: guest unavailable: {e}", file=sys.stderr)
        return 2
    except GuestError as e:
        print(f"run_all: {bench.name}: {e}\n{e.console}", file=sys.stderr)
        return 125
    data = result.outputs.get(f"{bench.name}.json")
    if data is not None:
        out.write_bytes(data)
    print(f"run_all: {bench.name}: guest boot {result.boot_seconds:.1f} s, "
          f"total {result.total_seconds:.1f} s", flush=True)
    return result.status


def run_one(bench: Bench, quick: bool, results: Path, timeout: float) -> dict[str, Any]:
    args = bench.quick if quick else bench.args
    print(f"\n=== {bench.name} ({bench.where}) {' '.join(args)}", flush=True)
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="acpbench") as tmp:
        out = Path(tmp) / "figures.json"
        try:
            if bench.where == "host":
                status = run_host(bench, args, out)
            else:
                status = run_guest(bench, args, out, timeout)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one broken bench must not hide the others' figures
            print(f"run_all: {bench.name}: {type(e).__name__}: {e}", file=sys.stderr)
            status = 1
        figures = json.loads(out.read_text()) if out.exists() else None
    record = {"name": bench.name, "where": bench.where, "args": list(args),
              "started": started.isoformat(timespec="seconds"),
              "seconds": round(time.monotonic() - t0, 1), "exit_status": status,
              "figures": figures}
    (results / f"{bench.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], metavar="NAME",
                        help="run only these: " + ", ".join(b.name for b in BENCHES))
    parser.add_argument("--quick", action="store_true",
                        help="short runs (smoke test of the runner; figures not comparable)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--guest-timeout", type=float, default=1500.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run_all: needs root (namespaces, the QEMU guest)", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    records = {}
    for bench in BENCHES:
        if args.only and bench.name not in args.only:
            continue
        records[bench.name] = run_one(bench, args.quick, args.results, args.guest_timeout)
    ran = tuple(records)
    for bench in BENCHES:  # figures from earlier runs fill the summary's other rows
        path = args.results / f"{bench.name}.json"
        if bench.name not in records and path.exists():
            records[bench.name] = json.loads(path.read_text())
    records = {b.name: records[b.name] for b in BENCHES if b.name in records}
    total = time.monotonic() - begin
    host = machine()
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": host, "guest_kernel": guest_kernel(), "total_seconds": round(total, 1),
            "quick": args.quick, "ran": list(ran), "partial": len(ran) < len(BENCHES)}
    (args.results / "machine.json").write_text(json.dumps(meta, indent=2) + "\n")
    text = summary_markdown(records, meta)
    (args.results / "summary.md").write_text(text)
    print("\n" + text)
    failed = [name for name, r in records.items() if r["figures"] is None]
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

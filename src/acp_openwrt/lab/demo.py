"""The ACP demo (`make demo`, `python3 -m acp_openwrt.lab.demo`): a real ACP forms, step by step.

On the host it boots a QEMU guest with Debian's kernel (the host kernel has no ESP, which the
secure channels need) and re-runs itself inside it with `--in-guest`, streaming the output.
In the guest: four nodes r - a - b - c in a line, one real acpd each. r is the registrar and
DODAG root; a, b and c start with only an IDevID. They enrol through BRSKI (b and c through a
neighbour's join proxy, over secure channels), RPL builds routes, every node reaches every
other; then `acpctl status` of each node, a ping from c to r across the secure channels, and
a summary (time to the full ACP, memory per node). Each step gets the shared `Demo` and
returns a one-line result or raises StepFailed.

Everything it makes (namespaces, acpd and its children, the MASA, the temp dir) is removed at
the end, also after a failed step, Ctrl-C or SIGTERM; on the host, the guest is killed.
Exit status: 0 only if the ACP formed, 1 if a step failed, 2 without root or with bad
arguments (or no guest to be had), 124/125 if the guest timed out or broke, 130 on Ctrl-C,
143 on SIGTERM.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from acp_openwrt.control.client import ControlClientError
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.demo_watch import FormationWatch, echo_rtts
from acp_openwrt.lab.topology import TopologySpec, cleanup_stale, from_edges

NODES = ("r", "a", "b", "c")
ROOT = "r"  # registrar and DODAG root
PLEDGES = NODES[1:]
EXIT_FAILED = 1
EXIT_USAGE = 2
IN_GUEST_FLAG = "--in-guest"
GUEST_TIMEOUT = 420.0  # the guest is killed after this; the demo itself takes about 2 minutes
FORMATION_TIMEOUT = 180.0
WHY_GUEST = ("booting a QEMU guest with Debian's kernel: this host's kernel has no ESP "
             "(IPsec), which the ACP's secure channels need")


class StepFailed(Exception):
    """A demo step did not get the outcome it shows (one line, names what went wrong)."""


@dataclass
class Demo:
    """State shared by the steps; `say` prints progress (tests capture it)."""

    workdir: Path
    spec: TopologySpec
    say: Callable[[str], None] = print
    lab: AcpdLab | None = None
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)  # event -> seconds since `started`
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> role -> RSS kB
    pool: ThreadPoolExecutor = field(default_factory=ThreadPoolExecutor)  # acpd starts
    starting: list[tuple[str, Future[None]]] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress(self, text: str) -> None:
        """One progress line, stamped with the seconds since the demo began."""
        self.say(f"  {self.elapsed():6.1f} s  {text}")

    def mark(self, event: str) -> None:
        self.marks[event] = self.elapsed()

    def need_lab(self) -> AcpdLab:
        if self.lab is None:
            raise StepFailed("no lab: the first step did not run")
        return self.lab

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        text = [[str(c) for c in row] for row in rows]
        widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
        for row in [list(headers), *text]:
            cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            self.say("    " + "  ".join(cells).rstrip())


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[Demo], str]


def demo_spec() -> TopologySpec:
    """r - a - b - c, DAD off so link-locals are usable at once."""
    return from_edges(pairwise(NODES), NODES)


def wait(demo: Demo, what: str, check: Callable[[], Any], timeout: float) -> float:
    """lab.wait, failing the step (not the program) after `timeout`."""
    try:
        return demo.need_lab().wait(what, check, timeout)
    except AssertionError:
        raise StepFailed(f"{what}: not within {timeout:g} s") from None


def build_nodes(demo: Demo) -> str:
    demo.lab = AcpdLab(demo.spec, demo.workdir)
    demo.lab.up()
    assert demo.lab.topology is not None
    prefix = demo.lab.topology.prefix
    return (f"{len(NODES)} nodes in namespaces {prefix}-{{{','.join(NODES)}}}, "
            f"{len(demo.spec.links)} veth links; each acpd will add its -dull and -acp namespaces")


def start_registrar(demo: Demo) -> str:
    lab = demo.need_lab()
    lab.start_masa(ROOT)
    demo.progress("MASA up (the manufacturer's voucher service, on [::1] in r's namespace)")
    lab.make_registrar(ROOT, "option dodag_root '1'")
    for name in PLEDGES:
        lab.make_pledge(name)
    demo.mark("first acpd started")
    lab.start_all([ROOT])
    wait(demo, "r has its own LDevID", lambda: lab.enrolled(ROOT), timeout=60)
    lab.trust_registrar(ROOT)
    demo.progress(f"r up: registrar with its own domain CA and LDevID, ACP address "
                  f"{lab.acp_address(ROOT)}, DODAG root")
    return "registrar r running; the MASA trusts its domain CA"


def start_pledges(demo: Demo) -> str:
    """Start the pledges' acpd together, in the background: the next step watches them come
    up and enrol (an acpd takes seconds to start under the guest's emulated CPU)."""
    lab = demo.need_lab()
    demo.mark("pledges started")
    demo.starting = [(name, demo.pool.submit(lab.nodes[name].start, timeout=60))
                     for name in PLEDGES]
    demo.progress(f"acpd starting on {', '.join(PLEDGES)}: IDevID only, no LDevID")
    return f"{len(PLEDGES)} pledges starting"


def form_acp(demo: Demo) -> str:
    watch = FormationWatch(demo.need_lab(), NODES, ROOT, demo.progress)
    deadline = time.monotonic() + FORMATION_TIMEOUT
    while not watch.poll():
        for name, future in demo.starting:
            if future.done() and future.exception() is not None:
                raise StepFailed(f"acpd on {name} did not start: {future.exception()}")
        if time.monotonic() > deadline:
            raise StepFailed(f"not formed within {FORMATION_TIMEOUT:g} s: {watch.missing()}")
        time.sleep(0.2)
    return (f"{len(PLEDGES)} pledges enrolled, {len(watch.channels)} secure channels, "
            f"{len(NODES)} nodes in the DODAG")


def _pings(lab: AcpdLab, src: str, dst: str) -> bool:
    return lab.ping(src, dst) == 1


def reach_all_pairs(demo: Demo) -> str:
    lab = demo.need_lab()
    pairs = [(src, dst) for src in NODES for dst in NODES if src != dst]
    for src, dst in pairs:
        wait(demo, f"{src} reaches {dst}'s ACP address",
             functools.partial(_pings, lab, src, dst), timeout=30)
    demo.mark("full ACP")
    demo.progress(f"all {len(pairs)} ordered pairs of nodes reach each other's ACP addresses")
    return f"{len(pairs)} of {len(pairs)} pairs answer"


def acpctl_argv() -> list[str]:
    """The installed acpctl if there is one (what an operator runs), else the module."""
    found = shutil.which("acpctl")
    return [found] if found else [sys.executable, "-m", "acp_openwrt.acpctl"]


def show_status(demo: Demo) -> str:
    """The real `acpctl status` per node, all four started at once (each is a Python start
    under the guest's emulated CPU), printed in node order."""
    lab = demo.need_lab()
    runs = {name: subprocess.Popen([*acpctl_argv(), "--socket", str(lab.nodes[name].socket),
                                    "status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for name in NODES}
    try:
        answers = {name: proc.communicate(timeout=60) for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (out, err) in answers.items():
        if runs[name].returncode != 0:
            raise StepFailed(f"{name}: acpctl status failed: {err.strip()}")
        demo.say(f"    --- {name}: acpctl --socket {lab.nodes[name].socket} status")
        for line in out.splitlines():
            demo.say(f"    {line}")
    return f"{len(NODES)} nodes answered"


def ping_across(demo: Demo) -> str:
    lab = demo.need_lab()
    src, dst = NODES[-1], ROOT
    source, target = lab.acp_address(src), lab.acp_address(dst)
    rtts = echo_rtts(lab.nodes[src].acp_ns, source, target, count=3, timeout=2.0)
    for seq, rtt in enumerate(rtts, 1):
        demo.say(f"    echo {seq}: {source} -> {target}: "
                 + (f"{rtt * 1000:.2f} ms" if rtt is not None else "no reply"))
    answered = [r for r in rtts if r is not None]
    if not answered:
        raise StepFailed(f"no echo reply from {dst} {target}")
    return f"{len(answered)}/{len(rtts)} echoes answered across {len(NODES) - 1} secure channels"


def measure_memory(demo: Demo) -> str:
    lab = demo.need_lab()
    demo.memory = {name: lab.memory(name) for name in NODES}
    missing = [name for name, rss in demo.memory.items() if not rss.get("acpd")]
    if missing:
        raise StepFailed(f"no acpd process found for {', '.join(missing)}")
    top = max(rss["acpd"] + rss["join_proxy"] for rss in demo.memory.values())
    return f"largest acpd + join proxy: {top / 1024:.1f} MB"


STEPS: tuple[Step, ...] = (
    Step("build the nodes r - a - b - c", build_nodes),
    Step("MASA and the registrar r", start_registrar),
    Step("start a, b, c with only an IDevID", start_pledges),
    Step("enrolment, secure channels, RPL", form_acp),
    Step("every node reaches every other", reach_all_pairs),
    Step("acpctl status on every node", show_status),
    Step("ping c -> r across the secure channels", ping_across),
    Step("memory per node", measure_memory),
)


@dataclass(frozen=True)
class Outcome:
    title: str
    passed: bool
    detail: str
    seconds: float


def run_steps(demo: Demo, steps: Sequence[Step]) -> list[Outcome]:
    """Run steps in order and stop at the first failure (later steps build on earlier ones)."""
    outcomes = []
    for number, step in enumerate(steps, 1):
        demo.say(f"[{number}/{len(steps)}] {step.title}")
        start = time.monotonic()
        try:
            detail, passed = step.run(demo), True
        except (StepFailed, OSError, ValueError, RuntimeError, ControlClientError,
                subprocess.SubprocessError) as exc:
            detail = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            passed = False
        outcomes.append(Outcome(step.title, passed, detail, time.monotonic() - start))
        demo.say(f"    {'ok' if passed else 'FAILED'}: {detail}")
        if not passed:
            show_log_tails(demo)
            break
    return outcomes


def show_log_tails(demo: Demo, lines: int = 8) -> None:
    """After a failure, the last lines each acpd wrote (its logs go with the temp dir)."""
    if demo.lab is None:
        return
    for name, node in demo.lab.nodes.items():
        tail = node.stderr().splitlines()[-lines:]
        if tail:
            demo.say(f"    --- {name} acpd log (last {len(tail)} lines)")
            for line in tail:
                demo.say(f"    | {line}")


def teardown(demo: Demo) -> list[str]:
    """Stop every acpd and the MASA, remove every namespace under the prefix, the temp dir."""
    problems = []
    if demo.lab is not None:
        prefix = demo.lab.topology.prefix if demo.lab.topology is not None else None
        try:
            demo.lab.close()
            # a start still under way ends once its acpd is stopped; one that had not yet
            # spawned it may have done so since: stop that one too
            wait_futures([future for _, future in demo.starting], timeout=70)
            if any(node.proc is not None for node in demo.lab.nodes.values()):
                demo.lab.close()
        except Exception as exc:  # keep going: the sweep below removes what close() left
            problems.append(f"{type(exc).__name__}: {exc}")
        if prefix is not None:
            try:
                cleanup_stale(prefix)
            except OSError as exc:
                problems.append(str(exc))
    demo.pool.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(demo.workdir, ignore_errors=True)
    return problems


def summary(demo: Demo, outcomes: Sequence[Outcome], steps: Sequence[Step]) -> bool:
    say = demo.say
    say("summary:")
    for outcome in outcomes:
        say(f"  {'PASS' if outcome.passed else 'FAIL'}  {outcome.title} ({outcome.seconds:.1f} s)")
    for step in steps[len(outcomes):]:
        say(f"  skip  {step.title}")
    passed = len(outcomes) == len(steps) and all(o.passed for o in outcomes)
    marks = demo.marks
    if {"first acpd started", "pledges started", "full ACP"} <= marks.keys():
        say(f"  time to full ACP (all enrolled, all pairs reachable): "
            f"{marks['full ACP'] - marks['first acpd started']:.1f} s from the first acpd start, "
            f"{marks['full ACP'] - marks['pledges started']:.1f} s after the pledges started")
    if demo.memory:
        say("  memory (RSS; charon is strongSwan's IKE daemon, one per node):")
        demo.table(["NODE", "ACPD", "JOIN PROXY", "CHARON"],
                   [[name, *(f"{rss[role] / 1024:.1f} MB"
                             for role in ("acpd", "join_proxy", "charon"))]
                    for name, rss in demo.memory.items()])
    say(f"demo {'passed: the ACP formed' if passed else 'FAILED'}: "
        f"{sum(o.passed for o in outcomes)}/{len(steps)} steps")
    return passed


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the teardown (or the guest's kill)


def _print_now(line: str) -> None:
    print(line, flush=True)  # progress shows at once, also through a pipe and the guest console


def run_demo(steps: Sequence[Step] = STEPS, say: Callable[[str], None] = _print_now) -> int:
    """Run the steps here (a kernel with ESP), always tear down; the exit status."""
    demo = Demo(Path(tempfile.mkdtemp(prefix="acp-demo-")), demo_spec(), say)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    outcomes: list[Outcome] = []
    try:
        say("ACP demo: r (registrar, DODAG root) - a - b - c in a line, one acpd each; "
            "a, b, c start with only an IDevID")
        outcomes = run_steps(demo, steps)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        problems = teardown(demo)
        say("teardown: " + ("everything removed" if not problems else "; ".join(problems)))
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    passed = summary(demo, outcomes, steps)
    return 0 if passed and not problems else EXIT_FAILED


def run_on_guest(say: Callable[[str], None] = _print_now) -> int:
    """Boot the guest, run the demo in it with `--in-guest`, stream its output, its status."""
    from acp_openwrt.lab.cli import EXIT_GUEST_FAILED, EXIT_TIMEOUT
    from acp_openwrt.lab.vm import GuestFailure, GuestTimeout, GuestUnavailable, run_in_guest

    last = [b"\n"]

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        last[0] = data[-1:]

    say(f"acp demo: {WHY_GUEST} (about 15 s)")
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        result = run_in_guest([sys.executable, "-m", "acp_openwrt.lab.demo", IN_GUEST_FLAG],
                              timeout=GUEST_TIMEOUT, on_output=write)
    except KeyboardInterrupt:  # run_in_guest has killed QEMU: nothing of the demo is left
        say(("" if last[0] == b"\n" else "\n") +
            "acp demo: interrupted; the guest is gone, and everything in it")
        return 130
    except GuestUnavailable as exc:
        say(f"acp demo: no guest: {exc}")
        return EXIT_USAGE
    except (GuestTimeout, GuestFailure) as exc:
        say(f"acp demo: {exc}")
        return EXIT_TIMEOUT if isinstance(exc, GuestTimeout) else EXIT_GUEST_FAILED
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    say(f"acp demo: guest booted in {result.boot_seconds:.1f} s; {result.total_seconds:.1f} s "
        f"in all; exit status {result.status}")
    return result.status


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv not in ([], [IN_GUEST_FLAG]):
        print(f"acp demo: takes no arguments but {IN_GUEST_FLAG} (got {' '.join(argv)})",
              file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("acp demo: must run as root (it boots a guest and builds network namespaces); "
              "try: sudo make demo", file=sys.stderr)
        return EXIT_USAGE
    if argv == [IN_GUEST_FLAG] or os.environ.get("ACP_LAB_GUEST") == "1":
        return run_demo()
    return run_on_guest()


if __name__ == "__main__":
    sys.exit(main())

"""The ACP demo (`make demo`, `python3 -m acp_openwrt.lab.demo`): a line of four nodes, step by step.

For now it shows the ground the ACP stands on: a topology R-A-B-C in network namespaces, a
domain CA and one certificate per node whose acp-node-name carries a Zone-scheme ACP address
(all in one ULA /48), what `acpctl identity --cert` reads from each, that `acpd --check`
accepts each node's generated UCI config, and that every neighbour answers on its link-local
address. The full ACP demo (issue 9) grows by appending steps to STEPS: each step gets the
shared `Demo` and returns a one-line result or raises StepFailed.

Everything it makes (namespaces, processes in them, the temp dir) is removed at the end, also
after a failed step, Ctrl-C or SIGTERM. Exit status: 0 if every step passed, 1 if one failed,
2 without root, 130 on Ctrl-C, 143 on SIGTERM.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acp_openwrt.identity.address import AcpAddress, name_for_address, zone_address
from acp_openwrt.lab.pki import NodeCredentials, TestCA
from acp_openwrt.lab.topology import Topology, TopologySpec, cleanup_stale, from_edges, random_prefix

DOMAIN = "acp.example.com"
REGISTRAR_ID = 1
NODES = ("r", "a", "b", "c")  # r: the DODAG root (and later the registrar)
EXIT_FAILED = 1
EXIT_USAGE = 2  # without root, or with arguments
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129


class StepFailed(Exception):
    """A demo step did not get the outcome it shows (one line, names what went wrong)."""


@dataclass
class NodeSetup:
    """What the demo made for one node."""

    name: str
    address: AcpAddress
    credentials: NodeCredentials | None = None
    config_path: Path | None = None
    identity: dict[str, Any] = field(default_factory=dict)


@dataclass
class Demo:
    """State shared by the steps; `say` prints progress (tests capture it)."""

    workdir: Path
    prefix: str
    spec: TopologySpec
    say: Callable[[str], None] = print
    topology: Topology | None = None
    ca: TestCA | None = None
    nodes: dict[str, NodeSetup] = field(default_factory=dict)

    def node_dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(exist_ok=True)
        return path

    def python(self, node: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of our programs as a module inside a node (no installed scripts needed)."""
        assert self.topology is not None
        return self.topology[node].run([sys.executable, "-m", module, *args], timeout=60)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        text = [[str(c) for c in row] for row in rows]
        widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
        for row in [list(headers), *text]:
            self.say("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[Demo], str]


def demo_spec() -> TopologySpec:
    """R - A - B - C, DAD off so link-locals are usable at once."""
    return from_edges(zip(NODES, NODES[1:]), NODES)


def build_topology(demo: Demo) -> str:
    demo.topology = Topology(demo.spec, demo.prefix)
    demo.topology.up()
    return f"{len(demo.spec.nodes)} namespaces {demo.prefix}-*, {len(demo.spec.links)} veth links"


def issue_certificates(demo: Demo) -> str:
    demo.ca = TestCA.create(demo.workdir / "pki", domain=DOMAIN)
    for number, name in enumerate(NODES, 1):
        address = zone_address(DOMAIN, REGISTRAR_ID, number)
        node_name = name_for_address(address, DOMAIN).format()
        setup = NodeSetup(name, address)
        setup.credentials = demo.ca.issue_node(name, acp_node_name=node_name)
        demo.nodes[name] = setup
    ula = demo.nodes[NODES[0]].address.ula_prefix
    return f"domain CA for {DOMAIN}; {len(NODES)} node certificates, Zone addresses in {ula}"


def show_identities(demo: Demo) -> str:
    rows = []
    for name, setup in demo.nodes.items():
        assert setup.credentials is not None
        res = demo.python(name, "acp_openwrt.acpctl", "identity", "--cert", str(setup.credentials.cert_path))
        if res.returncode != 0:
            raise StepFailed(f"{name}: acpctl identity failed: {res.stderr.strip()}")
        try:
            setup.identity = json.loads(res.stdout)
        except ValueError:
            raise StepFailed(f"{name}: acpctl identity printed no JSON: {res.stdout[:80]!r}") from None
        if setup.identity.get("acp_address") != str(setup.address.address):
            raise StepFailed(f"{name}: certificate gives {setup.identity.get('acp_address')}, "
                             f"issued for {setup.address.address}")
        rows.append([name, setup.identity["acp_node_name"],
                     f"{setup.identity['acp_address']}/{setup.identity['prefix_length']}",
                     setup.identity["scheme"]])
    demo.say("    (acpctl identity --cert <node cert>, per node)")
    demo.table(["NODE", "ACP-NODE-NAME", "ACP ADDRESS/PREFIX", "SCHEME"], rows)
    return f"{len(rows)} identities read back from their certificates"


def node_config(demo: Demo, setup: NodeSetup) -> str:
    """A per-node UCI config: own namespaces under the demo prefix, own run and log dirs."""
    assert setup.credentials is not None and demo.ca is not None
    base = demo.node_dir(setup.name)
    options = {
        "enabled": "1",
        "ldevid_cert": setup.credentials.cert_path,
        "ldevid_key": setup.credentials.key_path,
        "trust_anchors": demo.ca.anchor_path,
        "dodag_root": "1" if setup.name == NODES[0] else "0",
        "namespace_dull": f"{demo.prefix}-{setup.name}-dull",
        "namespace_acp": f"{demo.prefix}-{setup.name}-acp",
        "run_dir": base / "run",
        "log_dir": base / "log",
        "log_level": "info",
    }
    lines = [f"# acp demo node {setup.name}", "config acp 'main'"]
    lines += [f"\toption {key} '{value}'" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def check_configs(demo: Demo) -> str:
    for name, setup in demo.nodes.items():
        setup.config_path = demo.node_dir(name) / "acp.config"
        setup.config_path.write_text(node_config(demo, setup))
        res = demo.python(name, "acp_openwrt.acpd", "--check", "-c", str(setup.config_path))
        if res.returncode != 0:
            raise StepFailed(f"{name}: acpd --check refused {setup.config_path}: {res.stderr.strip()}")
        try:
            checked = json.loads(res.stdout)
        except ValueError:
            raise StepFailed(f"{name}: acpd --check printed no JSON") from None
        address = (checked.get("identity") or {}).get("acp_address")
        if address != str(setup.address.address):
            raise StepFailed(f"{name}: acpd --check sees ACP address {address}")
        demo.say(f"    {name}: acpd --check -c {setup.config_path}: valid, ACP address {address}")
    return f"{len(demo.nodes)} configs valid"


def icmp6_echo(sock: socket.socket, target: str, scope_id: int, ident: int, timeout: float) -> float:
    """One ICMPv6 echo on a raw socket of the sender's namespace; the round-trip time in s."""
    request = struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, 1) + b"acp-demo"
    start = time.monotonic()
    sock.sendto(request, (target, 0, 0, scope_id))  # the kernel fills in the ICMPv6 checksum
    while (left := start + timeout - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(1500)
        except TimeoutError:
            break
        if (len(data) >= 8 and data[0] == ICMP6_ECHO_REPLY and peer[0].split("%")[0] == target
                and struct.unpack("!HH", data[4:8]) == (ident, 1)):
            return time.monotonic() - start
    raise TimeoutError(f"no echo reply from {target} within {timeout} s")


def ping_neighbours(demo: Demo) -> str:
    assert demo.topology is not None
    topo, rows, ident = demo.topology, [], os.getpid() & 0xFFFF
    for link in topo.links:
        for src_end, dst_end in ((link.a, link.b), (link.b, link.a)):
            src, dst = topo[src_end.node], topo[dst_end.node]
            target = dst.link_local(dst_end.ifname)
            ident = (ident + 1) & 0xFFFF
            with src.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
                try:
                    rtt = icmp6_echo(sock, target, src.index(src_end.ifname), ident, timeout=2.0)
                except (TimeoutError, OSError) as exc:
                    raise StepFailed(f"{src.name}/{src_end.ifname} -> {dst.name} {target}: {exc}") from None
            rows.append([f"{src.name}/{src_end.ifname}", f"{dst.name}/{dst_end.ifname}", target,
                         f"{rtt * 1000:.2f} ms"])
    demo.table(["FROM", "TO", "LINK-LOCAL", "RTT"], rows)
    return f"{len(rows)} echoes answered across {len(topo.links)} links"


STEPS: tuple[Step, ...] = (
    Step("build the topology r - a - b - c", build_topology),
    Step("domain CA and node certificates", issue_certificates),
    Step("each node's identity (acpctl identity --cert)", show_identities),
    Step("each node's config validates (acpd --check)", check_configs),
    Step("neighbours answer on their link-locals", ping_neighbours),
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
        except (StepFailed, OSError, ValueError, subprocess.SubprocessError) as exc:
            detail = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            passed = False
        outcomes.append(Outcome(step.title, passed, detail, time.monotonic() - start))
        demo.say(f"    {'ok' if passed else 'FAILED'}: {detail}")
        if not passed:
            break
    return outcomes


def teardown(demo: Demo) -> list[str]:
    """Remove the topology, anything else under its prefix (acpd's namespaces), the temp dir."""
    problems = []
    if demo.topology is not None:
        try:
            demo.topology.down()
        except OSError as exc:
            problems.append(str(exc))
    try:
        cleanup_stale(demo.prefix)
    except OSError as exc:
        problems.append(str(exc))
    shutil.rmtree(demo.workdir, ignore_errors=True)
    return problems


def summary(outcomes: Sequence[Outcome], steps: Sequence[Step], say: Callable[[str], None]) -> bool:
    say("summary:")
    for outcome in outcomes:
        say(f"  {'PASS' if outcome.passed else 'FAIL'}  {outcome.title} ({outcome.seconds:.1f} s)")
    for step in steps[len(outcomes):]:
        say(f"  skip  {step.title}")
    passed = len(outcomes) == len(steps) and all(o.passed for o in outcomes)
    say(f"demo {'passed' if passed else 'FAILED'}: {sum(o.passed for o in outcomes)}/{len(steps)} steps")
    return passed


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_demo's teardown


def _print_now(line: str) -> None:
    print(line, flush=True)  # progress shows at once, also through a pipe


def run_demo(steps: Sequence[Step] = STEPS, say: Callable[[str], None] = _print_now) -> int:
    """Run the steps on a fresh prefix and temp dir, always tear down; the exit status."""
    demo = Demo(Path(tempfile.mkdtemp(prefix="acp-demo-")), random_prefix(), demo_spec(), say)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    outcomes: list[Outcome] = []
    try:
        say(f"ACP demo: nodes {' - '.join(NODES)} in a line (namespaces {demo.prefix}-*), "
            f"ACP domain {DOMAIN}")
        outcomes = run_steps(demo, steps)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        problems = teardown(demo)
        say("teardown: " + ("everything removed" if not problems else "; ".join(problems)))
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    passed = summary(outcomes, steps, say)
    return 0 if passed and not problems else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv:
        print(f"acp demo: takes no arguments (got {' '.join(argv)})", file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("acp demo: must run as root (it builds network namespaces); try: sudo make demo",
              file=sys.stderr)
        return EXIT_USAGE
    return run_demo()


if __name__ == "__main__":
    sys.exit(main())

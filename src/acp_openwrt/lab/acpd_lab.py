"""A lab ACP: a topology of namespaces with one real acpd per node (tests, demo, benchmarks).

Each topology node is a node's "host" namespace; its acpd makes `<prefix>-<node>a-dull` and
`-acp` (under the topology's prefix, so `Topology.down()` also sweeps them). Nodes start either
with an LDevID issued by the lab's domain CA (`enrolled`) or with whatever `extra` config lines
the caller gives (e.g. only an IDevID, to enrol through BRSKI). Everything is removed by close().
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..channels.testbed import ping
from ..netns import list_namespaces, remove_namespace
from ..identity.address import name_for_address, zone_address
from .acpd_runner import AcpdNode, wait_for
from .pki import TestCA
from .topology import Topology, TopologySpec

DOMAIN = "acp.example.com"
REGISTRAR_ID = 1


@dataclass
class AcpdLab:
    """`lab = AcpdLab(line(3), tmp); lab.up(); lab.enrol_all(root="n1"); lab.start_all()`."""
    spec: TopologySpec
    workdir: Path
    domain: str = DOMAIN
    topology: Topology | None = None
    ca: TestCA | None = None
    nodes: dict[str, AcpdNode] = field(default_factory=dict)

    def up(self) -> AcpdLab:
        self.topology = Topology(self.spec).up()
        self.ca = TestCA.create(self.workdir / "ca", domain=self.domain)
        for number, name in enumerate(self.topology.nodes, start=1):
            work = self.workdir / name
            work.mkdir(parents=True, exist_ok=True)
            host = self.topology[name].netns
            self.nodes[name] = AcpdNode(f"{host}a", host, work)
        return self

    def acp_address(self, name: str) -> str:
        """The Zone-scheme ACP address the lab gives node `name` (its position, from 1)."""
        number = list(self.nodes).index(name) + 1
        return str(zone_address("", REGISTRAR_ID, number).address)

    def enrol(self, name: str, *extra: str) -> None:
        """Give `name` an LDevID from the lab CA (as if BRSKI had run), plus config lines."""
        assert self.ca is not None
        number = list(self.nodes).index(name) + 1
        acp_name = name_for_address(zone_address("", REGISTRAR_ID, number), self.domain)
        creds = self.ca.issue_node(name, acp_node_name=str(acp_name))
        self.configure(name, f"option ldevid_cert '{creds.cert_path}'",
                       f"option ldevid_key '{creds.key_path}'",
                       f"option trust_anchors '{creds.anchor_path}'", *extra)

    def configure(self, name: str, *lines: str) -> None:
        node = self.nodes[name]
        node.extra += "".join(f"\t{line}\n" for line in lines)

    def start_all(self, names: Iterable[str] | None = None) -> None:
        for name in names or self.nodes:
            self.nodes[name].start(timeout=30)

    def ask(self, name: str, cmd: str, **params: Any) -> Any:
        return self.nodes[name].ask(cmd, **params)

    def channels_up(self, name: str) -> int:
        return sum(1 for ch in self.ask(name, "channels") if ch["state"] == "up")

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> float:
        """Seconds until `check()` is true; AssertionError naming `what` after `timeout`."""
        start = time.monotonic()
        wait_for(lambda: _quiet(check), timeout=timeout, interval=0.1, what=what)
        return time.monotonic() - start

    def ping(self, src: str, dst: str, count: int = 1, timeout: float = 2.0) -> int:
        """ICMPv6 echoes from src's ACP address to dst's, inside src's ACP namespace."""
        return ping(self.nodes[src].acp_ns, self.acp_address(src), self.acp_address(dst),
                    count=count, timeout=timeout)

    def close(self) -> None:
        for node in self.nodes.values():
            try:
                node.stop(signal.SIGTERM, timeout=15)
            except Exception:  # keep going: what it left is removed below
                node.stop(signal.SIGKILL)
        existing = set(list_namespaces())
        for node in self.nodes.values():
            for ns in (node.dull_ns, node.acp_ns):
                if ns in existing:
                    remove_namespace(ns)
        if self.topology is not None:
            self.topology.down()
            self.topology = None

    def logs(self) -> str:
        return "\n".join(f"--- {name} acpd ---\n{node.stderr()}" for name, node in self.nodes.items())


def _quiet(check: Callable[[], Any]) -> Any:
    """A check that raises (acpd not answering yet, no route yet) counts as not yet true."""
    try:
        return check()
    except Exception:
        return False

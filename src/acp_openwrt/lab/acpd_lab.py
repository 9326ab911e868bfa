"""A lab ACP: a topology of namespaces with one real acpd per node (tests, demo, benchmarks).

Each topology node is a node's "host" namespace; its acpd makes `<prefix>-<node>a-dull` and
`-acp`. Nodes start with an LDevID from the lab's own domain CA (`enrol`), or as in a
deployment: one node the registrar (`make_registrar`), the others with only an IDevID from the
lab's manufacturer (`make_pledge`), whose MASA (`start_masa`) this process serves. close()
stops every acpd and removes whatever is left, namespaces included.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..identity.address import name_for_address, zone_address
from ..netns import list_namespaces, remove_namespace, socket_in
from .acpd_runner import AcpdNode, wait_for
from .channel_testbed import ping
from .masa import Masa
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
    masa: Masa | None = None
    _masa_loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def up(self) -> AcpdLab:
        self.topology = Topology(self.spec).up()
        self.ca = TestCA.create(self.workdir / "ca", domain=self.domain)
        for name in self.topology.nodes:
            work = self.workdir / name
            work.mkdir(parents=True, exist_ok=True)
            host = self.topology[name].netns
            self.nodes[name] = AcpdNode(f"{host}a", host, work)
        return self

    def acp_address(self, name: str) -> str:
        """Node `name`'s ACP address: from its running acpd (enrolled through BRSKI), else the
        Zone-scheme address `enrol()` gives it (its position, from 1)."""
        if self.nodes[name].proc is not None:
            identity = _quiet(lambda: self.ask(name, "status").get("identity"))
            if identity:
                return str(identity["acp_address"])
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

    def own_files(self, name: str) -> tuple[str, ...]:
        """Config lines for where BRSKI stores this node's LDevID (in its work dir)."""
        work = self.nodes[name].workdir
        return (f"option ldevid_cert '{work / 'ldevid.pem'}'",
                f"option ldevid_key '{work / 'ldevid.key'}'",
                f"option trust_anchors '{work / 'domain-ca.pem'}'")

    def start_masa(self, name: str) -> Masa:
        """The manufacturer's MASA, on [::1] in node `name`'s host namespace (where its
        registrar's acpd connects from), served by a thread of this process."""
        assert self.masa is None
        self.masa = Masa.create(self.workdir / "vendor", host="::1")
        sock = socket_in(self.nodes[name].host_ns, socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::1", 0))
        sock.listen(64)
        loop = asyncio.new_event_loop()
        self._masa_loop = loop
        threading.Thread(target=loop.run_forever, name="masa", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.masa.serve(sock=sock), loop).result(10)
        return self.masa

    def make_registrar(self, name: str, *extra: str) -> None:
        """Node `name` becomes the registrar (it makes its domain CA and its own LDevID)."""
        assert self.masa is not None, "start_masa() first"
        work = self.nodes[name].workdir
        self.configure(name, "option registrar '1'", f"option registrar_domain '{self.domain}'",
                       f"option registrar_dir '{work / 'registrar'}'",
                       f"option manufacturer_trust_anchor '{self.masa.anchor_path}'",
                       *self.own_files(name), *extra)

    def trust_registrar(self, name: str) -> None:
        """Tell the MASA about the registrar's domain CA (once its acpd made it)."""
        assert self.masa is not None
        from cryptography import x509
        pem = (self.nodes[name].workdir / "registrar" / "domain-ca.crt").read_bytes()
        self.masa.trust_registrar(x509.load_pem_x509_certificate(pem))

    def make_pledge(self, name: str, *extra: str) -> None:
        """Node `name` starts with only an IDevID from the lab's manufacturer."""
        assert self.masa is not None, "start_masa() first"
        device = self.masa.issue_idevid(f"SN-{name}")
        self.configure(name, f"option idevid_cert '{device.cert_path}'",
                       f"option idevid_key '{device.key_path}'",
                       f"option manufacturer_trust_anchor '{self.masa.anchor_path}'",
                       *self.own_files(name), *extra)

    def registrar_and_pledges(self, registrar: str, *pledges: str) -> None:
        """The usual zero-touch start: the MASA and the registrar, which the MASA then trusts,
        and the pledges (IDevID only) started once it runs."""
        self.start_masa(registrar)
        self.make_registrar(registrar)
        for name in pledges:
            self.make_pledge(name)
        self.start_all([registrar])
        self.trust_registrar(registrar)
        self.start_all(pledges)

    def enrolled(self, name: str) -> bool:
        return self.ask(name, "status").get("identity") is not None

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
        if self._masa_loop is not None:
            loop, self._masa_loop = self._masa_loop, None
            if self.masa is not None:
                asyncio.run_coroutine_threadsafe(self.masa.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)

    def logs(self) -> str:
        return "\n".join(f"--- {name} acpd ---\n{node.stderr()}"
                         for name, node in self.nodes.items())

    def keep_logs(self, dest: Path, label: str, names: Iterable[str] | None = None) -> None:
        """Copy each node's acpd log and charon's logs to `dest` as `<label>-<node>...`: a
        bench's evidence of where the seconds went, after the lab's directory is gone."""
        dest.mkdir(parents=True, exist_ok=True)
        for name in names if names is not None else self.nodes:
            work = self.nodes[name].workdir
            if (work / "acpd.stderr").exists():
                (dest / f"{label}-{name}.log").write_bytes((work / "acpd.stderr").read_bytes())
            for charon in sorted(work.glob("log/charon*.log")):  # the IKE side
                (dest / f"{label}-{name}-{charon.name}").write_bytes(charon.read_bytes())

    def pids(self, name: str, role: str) -> list[int]:
        """Node `name`'s processes of one role (acpd, join proxy, charon): acpd and its
        children, read from /proc."""
        proc = self.nodes[name].proc
        assert proc is not None, f"{name}'s acpd is not running"
        return [p for p in (proc.pid, *descendants(proc.pid)) if process_role(p) == role]

    def memory(self, name: str) -> dict[str, int]:
        """RSS in kB of what node `name` runs, by role: acpd, its join proxy, its charon
        (reported apart: it is strongSwan's, not ours). Read from /proc: acpd and its children."""
        totals = dict.fromkeys(PROCESS_ROLES.values(), 0)
        proc = self.nodes[name].proc
        if proc is None:
            return totals
        for pid in (proc.pid, *descendants(proc.pid)):
            role = process_role(pid)
            if role is not None:
                totals[role] += rss_kb(pid)
        return totals


# What a process is, from its command line: the first marker found names its role.
PROCESS_ROLES = {"acp_openwrt.acpd": "acpd", "acp_openwrt.brski.proxy.entry": "join_proxy",
                 "acp_openwrt.brski.registrar.worker": "registrar_worker", "charon": "charon"}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return sorted(found)


def process_role(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [Path(a.decode(errors="replace")).name if i == 0 else a.decode(errors="replace")
             for i, a in enumerate(argv)]
    for marker, role in PROCESS_ROLES.items():
        if marker in words:
            return role
    return None


def rss_kb(pid: int) -> int:
    """Resident set size in kB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(lab: AcpdLab, node: str,
                roles: tuple[str, ...] = ("acpd", "charon")) -> dict[str, float]:
    """CPU seconds used so far by a node's processes of each role (benches: CPU shares)."""
    return {role: sum(cpu_seconds(p) for p in lab.pids(node, role)) for role in roles}


def _quiet(check: Callable[[], Any]) -> Any:
    """A check that raises (acpd not answering yet, no route yet) counts as not yet true."""
    try:
        return check()
    except Exception:
        return False

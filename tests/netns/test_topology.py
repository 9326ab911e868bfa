"""Topologies on this host's kernel: reachability, the in-namespace socket helper, teardown."""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import netns as netns_exec
from acp_openwrt.lab.topology import (
    Topology,
    TopologyError,
    cleanup_stale,
    line,
    random_prefix,
    segment,
)

RANDOM_PREFIX_NS = re.compile(r"^lab[0-9a-f]{6}-")
needs_ping = pytest.mark.skipif(shutil.which("ping") is None,
                                reason="ping (iputils-ping) not installed")


def ip_netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie not yet reaped counts as gone
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


class Prefixes:
    """Hands out fresh prefixes; at the end none of their namespaces may be left.

    Only this test's own prefixes are looked at, so parallel runs on the host do not interfere.
    """

    def __init__(self) -> None:
        self.used: list[str] = []

    def __call__(self, prefix: str | None = None) -> str:
        self.used.append(prefix or random_prefix())
        return self.used[-1]

    def left(self) -> set[str]:
        return {n for n in ip_netns_list() if any(n.startswith(p + "-") for p in self.used)}


@pytest.fixture
def prefixes() -> Iterator[Prefixes]:
    made = Prefixes()
    yield made
    assert made.left() == set()


@pytest.fixture
def line3(prefixes: Prefixes) -> Iterator[Topology]:
    with Topology(line(3), prefixes()) as topo:
        yield topo


def ping(topo: Topology, node: str, target: str,
         count: int = 1) -> subprocess.CompletedProcess[str]:
    return topo[node].run(["ping", "-6", "-n", "-c", str(count), "-i", "0.2", "-W", "1", target])


@needs_ping
def test_line_neighbours_reach_each_other_but_not_beyond(line3: Topology) -> None:
    n1, n2, n3 = line3["n1"], line3["n2"], line3["n3"]
    b_addr = n2.link_local(n2.ifname("n1"))
    c_addr = n3.link_local(n3.ifname("n2"))
    out = n1.ifname("n2")
    assert ping(line3, "n1", f"{b_addr}%{out}").returncode == 0
    assert ping(line3, "n1", f"{c_addr}%{out}").returncode != 0
    # All-nodes on n1's only link: the one answer comes from n2, none from n3.
    res = ping(line3, "n1", f"ff02::1%{out}", count=2)
    assert res.returncode == 0
    assert b_addr in res.stdout and c_addr not in res.stdout
    forwarding = n2.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"])
    assert forwarding.stdout.strip() == "0"


@needs_ping
def test_shared_segment_everyone_reaches_everyone(prefixes: Prefixes) -> None:
    with Topology(segment(3), prefixes()) as topo:
        addrs = {n: topo[n].link_local("eth0") for n in ("n1", "n2", "n3")}
        for src in addrs:
            for dst, addr in addrs.items():
                if src != dst:
                    res = ping(topo, src, f"{addr}%eth0")
                    assert res.returncode == 0, f"{src} -> {dst}: {res.stdout}{res.stderr}"
        # The switch is L2 only: it has no IPv6 address of its own to answer with.
        assert topo["sw"].run(["ip", "-6", "addr", "show"]).stdout.strip() == ""


def udp_pair(topo: Topology, sender: str, receiver: str,
             port: int) -> tuple[socket.socket, socket.socket]:
    tx = topo[sender].socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx = topo[receiver].socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::", port))
    rx.settimeout(2)
    return tx, rx


def test_socket_made_in_a_node_talks_on_that_nodes_links(line3: Topology) -> None:
    n1, n2 = line3["n1"], line3["n2"]
    n2.link_local("eth0")
    out_index = n1.index("eth0")
    tx, rx = udp_pair(line3, "n1", "n2", 7017)
    rx3 = line3["n3"].socket()
    rx3.bind(("::", 7017))
    rx3.settimeout(0.5)
    with tx, rx, rx3:
        tx.sendto(b"to-all-nodes", ("ff02::1", 7017, 0, out_index))
        data, peer = rx.recvfrom(100)
        assert data == b"to-all-nodes"
        assert peer[0] == n1.link_local("eth0")
        tx.sendto(b"unicast", (n2.link_local("eth0"), 7017, 0, out_index))
        assert rx.recvfrom(100)[0] == b"unicast"
        with pytest.raises(socket.timeout):  # n3 is two hops away: nothing arrives
            rx3.recvfrom(100)


def test_entered_restores_the_thread_even_when_the_body_raises(line3: Topology) -> None:
    def inode(path: str) -> int:
        return os.stat(path).st_ino

    home = inode("/proc/thread-self/ns/net")
    with pytest.raises(ZeroDivisionError):
        with line3["n2"].entered():
            assert inode("/proc/thread-self/ns/net") == inode(
                netns_exec.netns_path(line3["n2"].netns))
            raise ZeroDivisionError
    assert inode("/proc/thread-self/ns/net") == home
    # call_in: the result (or the error) comes back, and the caller never moves.
    seen = netns_exec.call_in(line3["n3"].netns, inode, "/proc/thread-self/ns/net")
    assert seen == inode(netns_exec.netns_path(line3["n3"].netns))
    with pytest.raises(KeyError):
        netns_exec.call_in(line3["n3"].netns, {}.__getitem__, "x")
    with pytest.raises(FileNotFoundError):
        netns_exec.call_in("no-such-namespace", int)
    assert inode("/proc/thread-self/ns/net") == home
    # An executor whose worker thread stays inside the namespace.
    with netns_exec.namespace_executor(line3["n1"].netns) as pool:
        ids = {pool.submit(inode, "/proc/thread-self/ns/net").result() for _ in range(3)}
    assert ids == {inode(netns_exec.netns_path(line3["n1"].netns))}


def test_link_local_waits_for_dad_and_times_out_without_address(prefixes: Prefixes) -> None:
    with Topology(line(2, dad=True), prefixes()) as topo:
        with topo["n1"].iproute() as ipr:
            start = time.monotonic()
            addr = topo["n1"].link_local("eth0")
            waited = time.monotonic() - start
            flags = [m.get_attr("IFA_FLAGS") for m in ipr.get_addr(family=socket.AF_INET6)
                     if m.get_attr("IFA_ADDRESS") == addr]
        assert flags and not flags[0] & 0x40
        assert waited > 0.3  # DAD really ran (about a second) and was waited for
    with Topology(line(2, addrgenmode="none"), prefixes()) as topo:
        with pytest.raises(TimeoutError, match="no usable link-local"):
            topo["n1"].link_local("eth0", timeout=0.3)
        with pytest.raises(TopologyError, match="no interface 'eth9'"):
            topo["n1"].link_local("eth9")
        # Fixed link-locals, as the IKE experiments used them: usable at once, no DAD.
        topo["n1"].add_address("eth0", "fe80::1")
        topo["n2"].add_address("eth0", "fe80::2")
        assert topo["n1"].link_local("eth0", timeout=0.5) == "fe80::1"
        tx, rx = udp_pair(topo, "n1", "n2", 9200)
        with tx, rx:
            tx.sendto(b"fixed", ("fe80::2", 9200, 0, topo["n1"].index("eth0")))
            assert rx.recvfrom(10) == (b"fixed", ("fe80::1", tx.getsockname()[1], 0,
                                                  topo["n2"].index("eth0")))


def test_failed_up_removes_what_it_made_and_spares_what_it_did_not(prefixes: Prefixes) -> None:
    prefix = prefixes()
    netns_exec.create_namespace(f"{prefix}-n3")  # someone else's, in the way
    try:
        topo = Topology(line(4), prefix=prefix)
        with pytest.raises(FileExistsError):
            topo.up()
        assert prefixes.left() == {f"{prefix}-n3"}
        assert topo.namespaces() == []
    finally:
        netns_exec.remove_namespace(f"{prefix}-n3")


def test_failure_while_linking_tears_down(prefixes: Prefixes,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = Topology._add_veth

    def flaky(self: Topology, ipr: object, link: object) -> None:
        calls.append(link)
        if len(calls) == 3:
            raise OSError("injected")
        real(self, ipr, link)

    monkeypatch.setattr(Topology, "_add_veth", flaky)
    with pytest.raises(OSError, match="injected"):
        Topology(line(5), prefixes()).up()
    assert len(calls) == 3
    assert prefixes.left() == set()


def test_body_that_raises_still_tears_down_and_ends_processes(prefixes: Prefixes) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="test body failed"):
        with Topology(line(2), prefixes()) as topo:
            daemon = topo["n1"].popen(["sleep", "300"])
            # a grandchild that left its parent behind, still inside n2
            topo["n2"].run(["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])
            pids = [daemon.pid, *netns_exec.pids_in([topo["n2"].netns])]
            assert len(pids) == 2 and all(alive(p) for p in pids)
            raise RuntimeError("test body failed")
    assert pids and not any(alive(p) for p in pids)
    assert daemon.returncode == -15  # ended by down()'s SIGTERM, status kept


def test_parallel_topologies_do_not_collide(prefixes: Prefixes) -> None:
    barrier = threading.Barrier(4)

    def one(_: int) -> tuple[str, bytes]:
        with Topology(line(3), prefixes()) as topo:
            barrier.wait(timeout=20)  # all four are up at the same time, same interface names
            tx, rx = udp_pair(topo, "n1", "n2", 9000)
            with tx, rx:
                token = topo.prefix.encode()
                tx.sendto(token, (topo["n2"].link_local("eth0"), 9000, 0, topo["n1"].index("eth0")))
                return topo.prefix, rx.recvfrom(100)[0]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert len({prefix for prefix, _ in results}) == 4
    assert all(prefix.encode() == got for prefix, got in results)


def test_hotplug_link_appears_and_goes(line3: Topology) -> None:
    link = line3.add_link("n1", "n3", "side", "side")
    assert line3["n1"].ifname("n3") == "side"
    addr = line3["n3"].link_local("side")
    tx, rx = udp_pair(line3, "n1", "n3", 9100)
    with tx, rx:
        tx.sendto(b"x", (addr, 9100, 0, line3["n1"].index("side")))
        assert rx.recvfrom(10)[0] == b"x"
    with pytest.raises(TopologyError, match="duplicate interface 'side'"):
        line3.add_link("n1", "n2", "side", "other")
    line3.remove_link(link)
    with pytest.raises(TopologyError, match="no interface 'side'"):
        line3["n3"].index("side")
    # Taking one end down takes the carrier away from the other.
    line3["n1"].set_link("eth0", up=False)
    assert wait_operstate(line3, "n2", "eth0") != "UP"
    line3["n1"].set_link("eth0", up=True)
    assert wait_operstate(line3, "n2", "eth0", want="UP") == "UP"


def wait_operstate(topo: Topology, node: str, ifname: str, want: str | None = None) -> str:
    deadline = time.monotonic() + 3
    with topo[node].iproute() as ipr:
        while True:
            state = ipr.get_links(ifname=ifname)[0].get_attr("IFLA_OPERSTATE")
            if (state == want if want else state != "UP") or time.monotonic() > deadline:
                return str(state)
            time.sleep(0.02)


def test_the_lab_never_forks_the_interpreter(prefixes: Prefixes) -> None:
    """pyroute2's netns helpers fork; a fork child hit by SIGTERM while a Python SIGTERM handler
    raises (acp-lab installs one) ran on as a second copy of the test session. Stay fork-free."""
    forks: list[int] = []
    os.register_at_fork(before=lambda: forks.append(1))  # hooks cannot be removed; a list is cheap
    with Topology(segment(2), prefixes()) as topo:
        topo["n1"].link_local("eth0")
        topo["n1"].set_link("eth0", up=True)
        topo["n2"].add_address("eth0", "fe80::2")
        with topo["n2"].iproute() as ipr:
            assert ipr.link_lookup(ifname="eth0")
        topo.add_link("n1", "n2", "x", "x")
        topo["n1"].socket().close()
        assert topo["n1"].run(["true"]).returncode == 0  # fork+exec in C, no Python in the child
    assert forks == []


def test_cleanup_stale_removes_only_its_prefix(prefixes: Prefixes) -> None:
    prefix = prefixes(random_prefix()[:8])
    mine = [f"{prefix}-n1", f"{prefix}-n1-dull"]
    other = f"{prefixes(prefix + '0')}-n1"  # a longer prefix that starts the same way
    for name in [*mine, other]:
        netns_exec.create_namespace(name)
    try:
        assert sorted(cleanup_stale(prefix)) == sorted(mine)
        assert prefixes.left() == {other}
    finally:
        netns_exec.remove_namespace(other)


def acp_lab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acp_openwrt.lab.cli", *argv],
                          capture_output=True, text=True, timeout=60)


@needs_ping
def test_acp_lab_topo_up_list_down_leaves_ip_netns_list_as_before(
        prefixes: Prefixes, tmp_path: Path) -> None:
    prefix = prefixes()
    state = ["topo", "--state-dir", str(tmp_path)]
    before = ip_netns_list()
    try:
        up = acp_lab(*state, "up", "line", "3", "--prefix", prefix, "--json")
        assert up.returncode == 0, up.stderr
        built = json.loads(up.stdout)
        assert [n["namespace"] for n in built["nodes"]] == [f"{prefix}-n{i}" for i in (1, 2, 3)]
        assert prefixes.left() == {f"{prefix}-n1", f"{prefix}-n2", f"{prefix}-n3"}
        # The topology outlives the command: n1 reaches n2's printed link-local over eth0.
        n2_eth0 = built["nodes"][1]["interfaces"][0]
        assert n2_eth0["peer"] == "n1/eth0" and n2_eth0["link_local"].startswith("fe80:")
        ping = subprocess.run(["ip", "netns", "exec", f"{prefix}-n1", "ping", "-6", "-n", "-c", "1",
                               "-W", "2", f"{n2_eth0['link_local']}%eth0"], capture_output=True)
        assert ping.returncode == 0

        again = acp_lab(*state, "up", "ring", "3", "--prefix", prefix)
        assert again.returncode == 2 and f"prefix {prefix} is in use" in again.stderr
        assert prefixes.left() == {f"{prefix}-n1", f"{prefix}-n2", f"{prefix}-n3"}  # untouched

        listed = acp_lab(*state, "list", "--json")
        assert listed.returncode == 0
        mine = [t for t in json.loads(listed.stdout) if t["prefix"] == prefix]
        assert mine == [{"prefix": prefix, "kind": "line", "n": 3, "namespaces": 3, "state": "up"}]

        netns_exec.create_namespace(f"{prefix}-n1-dull")  # what an acpd in n1 would leave
        down = acp_lab(*state, "down", "--prefix", prefix)
        assert down.returncode == 0, down.stderr
        assert "removed 4 namespaces" in down.stdout
        assert list(tmp_path.glob("*.json")) == []
        assert prefixes.left() == set()
        listed = acp_lab(*state, "list", "--json")
        assert [t for t in json.loads(listed.stdout) if t["prefix"] == prefix] == []
    finally:
        cleanup_stale(prefix)
    # Other test runs on this host may add or remove their own lab namespaces meanwhile.
    changed = before ^ ip_netns_list()
    assert all(RANDOM_PREFIX_NS.match(name) for name in changed), changed



def test_topology_fixture_gives_a_running_topology(topology: Any) -> None:
    topo = topology(line(2))
    other = topology(segment(2))
    assert topo.prefix != other.prefix
    assert set(topo.namespaces()) <= ip_netns_list()
    assert topo["n1"].link_local("eth0").startswith("fe80:")


FIXTURE_USER = '''
from acp_openwrt.lab.topology import line
from acp_openwrt import netns

def test_fails_with_a_topology_up(topology):
    topo = topology(line(2), prefix="PREFIX")
    netns.create_namespace("PREFIX-n1-dull")  # made by the test itself, swept by the fixture
    assert False, "this test fails on purpose"
'''


def test_topology_fixture_tears_down_after_a_failing_test(prefixes: Prefixes,
                                                          tmp_path: Path) -> None:
    prefix = prefixes()
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_user.py").write_text(FIXTURE_USER.replace("PREFIX", prefix))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "this test fails on purpose" in run.stdout
    assert "1 failed" in run.stdout and "error" not in run.stdout.splitlines()[-1]
    assert prefixes.left() == set()

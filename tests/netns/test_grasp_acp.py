"""Full GRASP (ACP mode) on a line of three namespaces a–b–c joined by veths.

Each node has its ACP address on lo (fd00::1, ::2, ::3), routes to the others' via link-local
next hops, and B forwards: the veths stand in for the secure channels. One GraspService per
node, all on the test's event loop; ASAs in other processes talk to them over the Unix API.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from acp_openwrt import netns as netns_exec
from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.errors import GraspApiError, GraspError
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.lab.topology import Topology, from_edges

NAMES = ("a", "b", "c")
ADDRESS = {"a": "fd00::1", "b": "fd00::2", "c": "fd00::3"}
SRC = Path(__file__).resolve().parents[2] / "src"


def _routes(routes: list[tuple[str, str, str]], forward: bool) -> None:
    """Inside a node: /128 routes via link-local next hops; forwarding on a middle node."""
    with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as fh:
        fh.write("1" if forward else "0")
    with IPRoute() as ipr:
        for dst, gateway, ifname in routes:
            ipr.route(
                "add", dst=f"{dst}/128", gateway=gateway, oif=ipr.link_lookup(ifname=ifname)[0]
            )


def build(topology) -> Topology:
    topo = topology(from_edges([("a", "b"), ("b", "c")], NAMES))
    for name in NAMES:
        topo[name].add_address("lo", ADDRESS[name], 128)
    ll = {
        (a, b): topo[a].link_local(topo[a].ifname(b))
        for a, b in [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]
    }
    # a and c route through b, which forwards
    for node, via, forward in (("a", "b", False), ("c", "b", False), ("b", None, True)):
        routes = [(ADDRESS[other], ll[(via or other, node)], topo[node].ifname(via or other))
                  for other in NAMES if other != node]
        netns_exec.call_in(topo[node].netns, _routes, routes, forward)
    return topo


async def services(topo: Topology, tmp: Path | None = None) -> dict[str, GraspService]:
    out = {}
    for name in NAMES:
        api = str(tmp / f"{name}.sock") if tmp is not None else None
        svc = GraspService(
            namespace=topo[name].netns, mode="acp", address=ADDRESS[name], api_path=api
        )
        await svc.start()
        out[name] = svc
        for link in topo.links:
            for end in (link.a, link.b):
                if end.node == name:
                    await svc.add_interface(end.ifname)
    return out


async def stop_all(svcs: dict[str, GraspService]) -> None:
    for svc in svcs.values():
        await svc.stop()


def tcp_locator(name: str) -> Locator:
    return Locator(
        c.O_IPv6_LOCATOR, socket.inet_pton(socket.AF_INET6, ADDRESS[name]), c.IPPROTO_TCP, 7017
    )


EX1 = Objective("EX1", c.F_SYNCH, 2, ["value", 1])


def test_flood_reaches_c_with_loop_count_2_and_stops_at_b_with_1(topology) -> None:
    topo = build(topology)

    async def scenario() -> None:
        svcs = await services(topo)
        try:
            asas = {n: s.register_asa("t") for n, s in svcs.items()}
            heard = {n: asyncio.Event() for n in NAMES}
            for n in NAMES:
                svcs[n].on_flood("EX1", lambda f, n=n: heard[n].set())
                svcs[n].on_flood("EX0", lambda f, n=n: heard[n].set())
            svcs["a"].flood(asas["a"], 30000, [(EX1, None)])
            await asyncio.wait_for(heard["c"].wait(), 2.0)
            (entry,) = svcs["c"].get_flood(asas["c"], "EX1")
            remaining = entry.expires - asyncio.get_running_loop().time()
            assert 28.0 < remaining <= 30.0
            assert entry.initiator == socket.inet_pton(socket.AF_INET6, ADDRESS["a"])
            assert entry.objective.loop_count == 1 and entry.objective.value == ["value", 1]
            assert entry.ifname == topo["c"].ifname("b")
            assert svcs["b"].counters()["engine"]["flood_relayed"] == 1
            for e in heard.values():
                e.clear()
            svcs["a"].flood(asas["a"], 30000, [(Objective("EX0", c.F_SYNCH, 1, 0), None)])
            await asyncio.wait_for(heard["b"].wait(), 2.0)
            await asyncio.sleep(0.3)
            assert not heard["c"].is_set() and svcs["c"].get_flood(asas["c"], "EX0") == []
            assert svcs["b"].get_flood(asas["b"], "EX0")
        finally:
            await stop_all(svcs)

    asyncio.run(scenario())


def test_discovery_two_hops_then_negotiation_and_synchronization(topology) -> None:
    topo = build(topology)

    async def scenario() -> None:
        svcs = await services(topo)
        try:
            a, cc = svcs["a"].register_asa("buyer"), svcs["c"].register_asa("seller")
            ex2 = Objective("EX2", c.F_DISC | c.F_NEG | c.F_SYNCH, 6, ["NZD", 410])
            svcs["c"].register_objective(cc, ex2, discoverable=True)
            svcs["c"].listen_synchronize(cc, ex2)
            found = await svcs["a"].discover(a, ex2.with_value(None), timeout_ms=500)
            assert found == [tcp_locator("c")]
            assert svcs["b"].counters()["engine"]["discovery_relayed"] == 1

            async def seller() -> bool:
                req = await svcs["c"].listen_negotiate(cc, ex2)
                assert req.objective.value == ["NZD", 410]
                assert req.peer == socket.inet_pton(socket.AF_INET6, ADDRESS["a"])
                with pytest.raises(GraspApiError):  # not the buyer's session
                    svcs["a"].end_negotiate(a, req.handle, True)
                reply = await svcs["c"].negotiate_step(cc, req.handle, ex2.with_value(["NZD", 300]))
                return reply.handle is None and reply.objective.value == ["NZD", 300]

            task = asyncio.create_task(seller())
            await asyncio.sleep(0)
            reply = await svcs["a"].request_negotiate(a, ex2, found[0])
            assert reply.objective.value == ["NZD", 300] and reply.objective.loop_count == 5
            svcs["a"].end_negotiate(a, reply.handle, True)
            assert await asyncio.wait_for(task, 2.0)
            value = await svcs["a"].synchronize(a, ex2.with_value(None), found[0])
            assert value.value == ["NZD", 410]
            t0 = time.monotonic()
            with pytest.raises(GraspApiError) as err:  # nobody listens on that port: refused
                await svcs["a"].request_negotiate(a, ex2, found[0]._replace(port=7999))
            assert err.value.code == GraspError.noNegReply and time.monotonic() - t0 < 1.0
            svcs["c"].deregister_asa(cc)
            with pytest.raises(GraspApiError) as err:
                await svcs["a"].request_negotiate(a, ex2, found[0])
            assert err.value.code == GraspError.noNegReply
        finally:
            await stop_all(svcs)

    asyncio.run(scenario())


SELLER = """
import asyncio, sys
from acp_openwrt.grasp.client import GraspClient
from acp_openwrt.grasp.messages import Objective
async def main():
    async with GraspClient(sys.argv[1]) as g:
        asa = await g.register_asa("seller")
        ex3 = Objective("EX3", 2 | 4 | 1, 6, ["NZD", 410])
        await g.register_objective(asa, ex3, discoverable=True)
        await g.listen_synchronize(asa, ex3.with_value("sync-value"))
        print("ready", flush=True)
        req = await g.listen_negotiate(asa, ex3)
        offer = ex3.with_value(["NZD", req.objective.value[1] - 10])
        reply = await g.negotiate_step(asa, req.handle, offer)
        print("ended", reply.handle, reply.objective.value, flush=True)
        await asyncio.sleep(30)
asyncio.run(main())
"""

BUYER = """
import asyncio, sys
from acp_openwrt.grasp.client import GraspClient
from acp_openwrt.grasp.messages import Objective
async def main():
    async with GraspClient(sys.argv[1]) as g:
        asa = await g.register_asa("buyer")
        ex3 = Objective("EX3", 2 | 4 | 1, 6, ["NZD", 100])
        (peer,) = await g.discover(asa, ex3, timeout_ms=500)
        reply = await g.request_negotiate(asa, ex3, peer)
        await g.end_negotiate(asa, reply.handle, True)
        synced = await g.synchronize(asa, ex3.with_value(None), peer)
        print("done", reply.objective.value, synced.value, flush=True)
asyncio.run(main())
"""


async def run_python(script: str, *args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )


def test_negotiation_and_synchronization_between_processes(topology, tmp_path) -> None:
    topo = build(topology)

    async def scenario() -> None:
        svcs = await services(topo, tmp_path)
        seller = buyer = None
        try:
            seller = await run_python(SELLER, str(tmp_path / "c.sock"))
            assert await asyncio.wait_for(seller.stdout.readline(), 10) == b"ready\n"
            buyer = await run_python(BUYER, str(tmp_path / "a.sock"))
            out = await asyncio.wait_for(buyer.stdout.read(), 10)
            assert out.decode().split() == ["done", "['NZD',", "90]", "sync-value"]
            assert await buyer.wait() == 0
            line = await asyncio.wait_for(seller.stdout.readline(), 5)
            assert line == b"ended None ['NZD', 90]\n"
            seller.kill()
            await seller.wait()
            await asyncio.sleep(0.2)  # the seller's ASA goes with its connection
            assert svcs["c"].status()["asas"] == []
        finally:
            for proc in (seller, buyer):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await stop_all(svcs)

    asyncio.run(scenario())


HOSTILE = """
import os, random, socket, sys, time
import cbor2
ifname, seconds, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
idx = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
dest = ("ff02::13", 7017, 0, idx)
init = bytes.fromhex("fd000000000000000000000000000009")
rng = random.Random(1)
good = lambda i: cbor2.dumps([9, i, init, 60000, [["EVIL", 4, 1, i], []]])
start = time.monotonic(); sent = 0
while True:
    now = time.monotonic()
    if now - start >= seconds:
        break
    due = int((now - start) * rate)
    while sent < due:
        k = sent % 10
        if k < 8:
            data = good(sent)
        else:
            data = rng.randbytes(rng.randrange(1, 300)) if k == 8 else good(sent)[:-3]
        try:
            s.sendto(data, dest)
        except OSError:
            pass
        sent += 1
    time.sleep(0.001)
print(sent)
"""


def test_hostile_sender_leaves_service_answering(topology) -> None:
    topo = build(topology)

    async def scenario() -> None:
        svcs = await services(topo)
        try:
            b, cc, a = (svcs[n].register_asa("t") for n in "bca")
            ex4 = Objective("EX4", c.F_NEG, 6, 1)
            good = []
            svcs["b"].on_flood("GOOD", good.append)
            cpu0 = time.process_time()
            hostile = await asyncio.create_subprocess_exec(
                *netns_exec.netns_argv(
                    topo["a"].netns,
                    [sys.executable, "-c", HOSTILE, topo["a"].ifname("b"), "2", "10000"],
                ),
                stdout=asyncio.subprocess.PIPE,
            )
            for i in range(15):  # a well-behaved neighbour keeps flooding meanwhile
                svcs["c"].flood(cc, 60000, [(Objective("GOOD", c.F_SYNCH, 1, i), None)])
                await asyncio.sleep(0.1)
            sent = int((await asyncio.wait_for(hostile.communicate(), 10))[0])
            cpu = time.process_time() - cpu0
            assert sent >= 19000
            counters = svcs["b"].counters()["engine"]
            assert counters["rate_limited"] > 10000
            assert counters.get("decode_error", 0) > 0
            assert len(good) == 15  # not starved
            assert cpu < 1.5, cpu  # the three services together, over ~2 s (measured: 0.2 s)
            # and B still negotiates (with A, the attacker's own node)
            task = asyncio.create_task(svcs["b"].listen_negotiate(b, ex4))
            await asyncio.sleep(0)
            reply_task = asyncio.create_task(svcs["a"].request_negotiate(a, ex4, tcp_locator("b")))
            req = await asyncio.wait_for(task, 2.0)
            svcs["b"].end_negotiate(b, req.handle, True)
            reply = await asyncio.wait_for(reply_task, 2.0)
            assert reply.handle is None
        finally:
            await stop_all(svcs)

    asyncio.run(scenario())


UNKNOWN_OPTION = [200, "an option from a later RFC", {"x": 1}]


def _raw_peer(topo: Topology) -> socket.socket:
    """A TCP socket born in A's namespace, to speak GRASP to B by hand."""
    return netns_exec.call_in(topo["a"].netns, socket.socket, socket.AF_INET6, socket.SOCK_STREAM)


def _exchange(sock: socket.socket, messages: list[list], replies: int) -> list:
    """Send CBOR messages on one connection, read `replies` CBOR items back (blocking, 3 s)."""
    import cbor2

    from acp_openwrt.grasp.stream import StreamFramer

    sock.settimeout(3.0)
    framer, got = StreamFramer(), []
    for msg in messages:
        sock.sendall(cbor2.dumps(msg))
    while len(got) < replies:
        data = sock.recv(65536)
        if not data:
            break
        got.extend(cbor2.loads(item) for item in framer.feed(data))
    return got


def test_unknown_options_are_skipped_and_the_connection_kept(topology) -> None:
    """RFC 8990 §2.8.2 over real TCP: every message of a negotiation carries an option type
    nobody has defined; B answers each and keeps the connection (it used to close it)."""
    topo = build(topology)

    async def scenario() -> None:
        svcs = await services(topo)
        sock = _raw_peer(topo)
        try:
            b = svcs["b"].register_asa("seller")
            ex3 = Objective("EX3", c.F_NEG, 6, ["NZD", 410])
            listening = asyncio.create_task(svcs["b"].listen_negotiate(b, ex3))
            await asyncio.sleep(0)
            await asyncio.to_thread(sock.connect, (ADDRESS["b"], 7017, 0, 0))
            request = [c.M_REQ_NEG, 4711, UNKNOWN_OPTION, ["EX3", c.F_NEG, 6, ["NZD", 410]]]
            sent = asyncio.create_task(asyncio.to_thread(_exchange, sock, [request], 1))
            req = await asyncio.wait_for(listening, 3.0)
            assert req.objective.value == ["NZD", 410]
            step = asyncio.create_task(
                svcs["b"].negotiate_step(b, req.handle, ex3.with_value(["NZD", 300]))
            )
            (answer,) = await asyncio.wait_for(sent, 3.0)
            assert answer[0] == c.M_NEGOTIATE and answer[1] == 4711 and answer[2][3] == ["NZD", 300]
            # the end, with an unknown option before O_ACCEPT, on the same connection
            await asyncio.to_thread(
                sock.sendall,
                __import__("cbor2").dumps([c.M_END, 4711, UNKNOWN_OPTION, [c.O_ACCEPT]]),
            )
            reply = await asyncio.wait_for(step, 3.0)
            assert reply.handle is None and reply.objective.value == ["NZD", 300]  # accepted
            counters = svcs["b"].counters()["engine"]
            assert counters["unknown_option_skipped"] == 2
            assert "decode_error" not in counters
        finally:
            sock.close()
            await stop_all(svcs)

    asyncio.run(scenario())

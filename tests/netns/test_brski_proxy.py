"""The join proxy end to end in namespaces: acpd's service, the unprivileged process, a pledge.

Nodes: `dull` (acpd's DULL namespace, veth to `pledge`) and `acp` (the ACP namespace, where a
fake registrar echoes on an ACP address). The service opens the listener in `dull`, the proxy
process runs in `acp` as nobody, a client in `pledge` connects to the proxy's link-local port.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import netns
from acp_openwrt.brski.proxy.part import JoinProxyPart, ProxySettings
from acp_openwrt.brski.proxy.relay import RelayLimits
from acp_openwrt.config.schema import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import AnProxyStart, AnProxyStop, EventBus, LinkAdopted, LinkReleased
from acp_openwrt.lab.topology import Topology, from_edges
from acp_openwrt.lab.waiting import until
from acp_openwrt.node_context import NodeContext

REGISTRAR = "fd00:0:0:1::1"
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology(from_edges([("dull", "pledge")], nodes=["dull", "pledge", "acp"])) as t:
        t["acp"].add_address("lo", REGISTRAR, 128)
        yield t


class Bench:
    """One node's worth of acpd context around a JoinProxyPart, plus the pledge's view.

    Built before asyncio.run(): pyroute2's synchronous IPRoute cannot run inside a running loop.
    """

    def __init__(self, topo: Topology, tmp: Path, identity: bool = True, **settings: Any) -> None:
        self.topo = topo
        config = AcpConfig(namespace_dull=topo["dull"].netns, namespace_acp=topo["acp"].netns,
                           run_dir=tmp, log_dir=tmp)
        self.bus = EventBus()
        self.ctx = NodeContext(config, self.bus, ControlServer(tmp / "acpd.sock"),
                               identity={"acp_address": "fd00::2"} if identity else None)
        self.events: list[object] = []
        self.bus.subscribe(AnProxyStart, self.events.append)
        self.bus.subscribe(AnProxyStop, self.events.append)
        self.service = JoinProxyPart(self.ctx, ProxySettings(**settings))
        dull, pledge = topo["dull"], topo["pledge"]
        self.dull_if = dull.ifname("pledge")
        self.pledge_if = pledge.ifname("dull")
        self.link = LinkAdopted("host0", self.dull_if, dull.index(self.dull_if),
                                dull.link_local(self.dull_if))
        self.pledge_index = pledge.index(self.pledge_if)
        pledge.link_local(self.pledge_if)
        self.echo_port = 0

    async def start_echo(self) -> asyncio.AbstractServer:
        sock = self.topo["acp"].socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.bind((REGISTRAR, 0))
        sock.listen(16)
        self.echo_port = sock.getsockname()[1]

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()
        return await asyncio.start_server(echo, sock=sock)

    async def pledge_connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = self.topo["pledge"].socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                sock, (self.link.link_local, port, 0, self.pledge_index)), 3)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def pledge_echo(self, port: int, payload: bytes) -> tuple[bytes, Any]:
        """Send through the proxy; what came back (b'' if refused) and the open writer."""
        try:
            reader, writer = await self.pledge_connect(port)
        except ConnectionResetError:  # the proxy's RST can beat the connect's completion
            return b"", None
        try:
            writer.write(payload)
            await writer.drain()
            return await asyncio.wait_for(reader.readexactly(len(payload)), 3), writer
        except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError):
            writer.close()
            return b"", writer

    def starts(self) -> list[AnProxyStart]:
        return [e for e in self.events if isinstance(e, AnProxyStart)]


def proc_ids(pid: int) -> tuple[list[int], list[int]]:
    uid = gid = []
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Uid:"):
                uid = [int(x) for x in line.split()[1:]]
            elif line.startswith("Gid:"):
                gid = [int(x) for x in line.split()[1:]]
    return uid, gid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_pledge_reaches_registrar_through_unprivileged_proxy(topo: Topology,
                                                             tmp_path: Path) -> None:
    bench = Bench(topo, tmp_path)

    async def scenario() -> None:
        echo = await bench.start_echo()
        svc = bench.service
        await svc.start()
        try:
            bench.bus.publish(bench.link)
            await until(lambda: svc.status()["connected"], what="proxy hello")
            pid = svc.status()["pid"]
            uid, gid = proc_ids(pid)
            assert uid == [NOBODY.pw_uid] * 4 and gid == [NOBODY.pw_gid] * 4
            acp_ns = os.stat(netns.netns_path(topo["acp"].netns)).st_ino
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == acp_ns
            listener = (await until(lambda: svc.status()["listeners"], what="listener"))[0]
            port = listener["port"]
            assert listener["address"] == bench.link.link_local
            await until(lambda: svc.status()["listeners"][0]["serving"], what="proxy listening")

            # No registrar yet: no AN_Proxy, and a pledge is turned away.
            assert bench.starts() == [] and svc.announcements() == []
            got, _ = await bench.pledge_echo(port, b"hello")
            assert got == b""

            svc.registrar_heard(REGISTRAR, bench.echo_port, 180_000)
            start = await until(bench.starts, what="AN_Proxy start")
            assert start == [AnProxyStart(bench.dull_if, bench.link.link_local, port)]

            payload = os.urandom(50_000)
            got, writer = await bench.pledge_echo(port, payload)
            assert got == payload
            reply = await bench.ctx.control.dispatch(b'{"cmd": "proxy"}')
            assert reply["ok"], reply
            result = reply["result"]
            assert result["registrar"] == {"address": REGISTRAR, "port": bench.echo_port}
            assert result["proxy"]["uid"] == NOBODY.pw_uid
            conns = result["connections"]
            assert len(conns) == 1 and conns[0]["bytes_up"] == conns[0]["bytes_down"] == 50_000
            assert conns[0]["pledge"].startswith("fe80:")
            writer.close()

            bench.bus.publish(LinkReleased("host0", bench.dull_if))
            await until(lambda: AnProxyStop(bench.dull_if) in bench.events, what="AN_Proxy stop")
            with pytest.raises(OSError):
                await bench.pledge_connect(port)
        finally:
            await svc.stop()
            echo.close()
        assert svc.status()["pid"] is None and not alive(pid)
        # the proxy process logs to its own file in log_dir, not to acpd's stderr
        assert "listening on" in (tmp_path / "join-proxy.log").read_text()
    asyncio.run(scenario())


def test_limits_idle_timeout_and_registrar_expiry(topo: Topology, tmp_path: Path) -> None:
    limits = RelayLimits(max_connections=8, max_per_pledge=2, idle_timeout=0.6)
    bench = Bench(topo, tmp_path, limits=limits)

    async def scenario() -> None:
        echo = await bench.start_echo()
        svc = bench.service
        bench.bus.publish(bench.link)  # adopted before the service starts: still picked up
        await svc.start()
        try:
            svc.registrar_heard(REGISTRAR, bench.echo_port, 180_000)
            start = (await until(bench.starts, what="AN_Proxy start"))[0]
            open_ = []
            for i in range(2):
                got, writer = await bench.pledge_echo(start.port, b"x%d" % i)
                assert got == b"x%d" % i
                open_.append(writer)
            got, _ = await bench.pledge_echo(start.port, b"third")
            assert got == b""  # per-pledge limit
            # Idle circuits are closed by the proxy after 0.6 s without a byte.
            t0 = time.monotonic()
            totals: dict[str, int] = {}
            while time.monotonic() - t0 < 5:
                reply = await bench.ctx.control.dispatch(b'{"cmd": "proxy"}')
                totals = reply["result"]["totals"]
                if totals.get("idle_closed") == 2:
                    break
                await asyncio.sleep(0.1)
            assert totals.get("idle_closed") == 2 and totals.get("refused_per_pledge_limit") == 1
            assert 0.5 < time.monotonic() - t0 < 3
            for writer in open_:
                writer.close()
            # A registrar whose flood is not refreshed is lost: AN_Proxy stops, pledges refused.
            svc.registrar_heard(REGISTRAR, bench.echo_port, 0)
            await until(lambda: AnProxyStop(bench.dull_if) in bench.events, what="AN_Proxy stop")
            svc.registrar_heard(REGISTRAR, bench.echo_port, 500)
            await until(lambda: len(bench.starts()) == 2, what="second AN_Proxy start")
            await until(lambda: bench.events.count(AnProxyStop(bench.dull_if)) == 2, 3,
                        what="stop on ttl expiry")
            got, _ = await bench.pledge_echo(start.port, b"late")
            assert got == b""
        finally:
            await svc.stop()
            echo.close()
    asyncio.run(scenario())


def test_killed_proxy_is_restarted_on_the_same_port(topo: Topology, tmp_path: Path) -> None:
    bench = Bench(topo, tmp_path, restart_min=0.2)

    async def scenario() -> None:
        echo = await bench.start_echo()
        svc = bench.service
        await svc.start()
        try:
            bench.bus.publish(bench.link)
            svc.registrar_heard(REGISTRAR, bench.echo_port, 180_000)
            start = (await until(bench.starts, what="AN_Proxy start"))[0]
            first = svc.status()["pid"]
            os.kill(first, signal.SIGKILL)
            await until(lambda: AnProxyStop(bench.dull_if) in bench.events, what="stop on death")
            await until(lambda: len(bench.starts()) == 2, what="AN_Proxy again after restart")
            second = svc.status()["pid"]
            assert second != first and svc.status()["restarts"] == 1
            assert bench.starts()[1] == start  # same listener, same port
            assert proc_ids(second)[0] == [NOBODY.pw_uid] * 4
            got, writer = await bench.pledge_echo(start.port, b"again")
            assert got == b"again"
            writer.close()
        finally:
            await svc.stop()
            echo.close()
        assert not alive(second)
    asyncio.run(scenario())


def test_without_ldevid_nothing_runs(topo: Topology, tmp_path: Path) -> None:
    bench = Bench(topo, tmp_path, identity=False)

    async def scenario() -> None:
        await bench.service.start()
        try:
            bench.bus.publish(bench.link)
            bench.service.registrar_heard(REGISTRAR, 8443, 180_000)
            await asyncio.sleep(0.5)
            status = bench.service.status()
            assert not status["active"] and status["pid"] is None and status["listeners"] == []
            assert bench.events == []
        finally:
            await bench.service.stop()
    asyncio.run(scenario())

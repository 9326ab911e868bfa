"""Secure channels between nodes in one guest: ChannelPart driven by AdjacencyUp events.

Each node is a DULL + ACP namespace pair with its own charon; the nodes' DULL namespaces are
joined by veths. Short DPD timers keep the whole file fast.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from acp_openwrt import netns
from acp_openwrt.events import ChannelDown, ChannelUp
from acp_openwrt.lab.channel_testbed import BedNode, Testbed, route_via
from acp_openwrt.lab.channel_testbed import ping as echo
from acp_openwrt.lab.channel_testbed import run_scenario as run


async def channels(node: BedNode) -> list[dict[str, Any]]:
    reply = await node.ctx.control.dispatch(b'{"cmd": "channels"}')
    assert reply["ok"], reply
    return reply["result"]


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], limit: float) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def up_count(node: BedNode) -> int:
    return sum(1 for e in await channels(node) if e["state"] == "up")


def acp_links(node: BedNode) -> list[str]:
    from acp_openwrt.channels.xfrm_interface import list_xfrm
    return sorted(x.ifname for x in netns.call_in(node.acp, list_xfrm))


def ping(node: BedNode, target: str, count: int = 3, timeout: float = 5.0) -> int:
    """ICMPv6 echoes from the node's ACP loopback address; replies received."""
    return echo(node.acp, node.address, target, count, timeout)


async def pair(bed: Testbed, start_b: bool = True) -> tuple[BedNode, BedNode, str, str]:
    a, b = bed.add_node("a"), bed.add_node("b")
    if_a, if_b = bed.link(a, b)
    await a.new_service().start()
    if start_b:
        await b.new_service().start()
    return a, b, if_a, if_b


async def both_up(a: BedNode, b: BedNode, limit: float = 40.0) -> float:
    async def check() -> bool:
        return await up_count(a) == 1 and await up_count(b) == 1
    return await wait_for("channel up on both nodes", check, limit)


def test_channel_up_ping_and_multicast(guest: None, tmp_path: Path) -> None:
    async def scenario(bed: Testbed) -> None:
        a, b, if_a, if_b = await pair(bed)
        seen: list[object] = []
        a.ctx.bus.subscribe(ChannelUp, seen.append)
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        await both_up(a, b)
        (ea,), (eb,) = await channels(a), await channels(b)
        assert ea["peer_node_name"] == b.ctx.identity["acp_node_name"]
        assert eb["peer_node_name"] == a.ctx.identity["acp_node_name"]
        assert ea["interface"].startswith("acp_") and len(ea["interface"]) <= 15
        assert acp_links(a) == [ea["interface"]] and acp_links(b) == [eb["interface"]]
        assert {ea["role"], eb["role"]} == {"decider", "follower"}
        assert [type(e) for e in seen] == [ChannelUp]
        json.dumps(await channels(a))
        route_via(a, b, ea["interface"])
        route_via(b, a, eb["interface"])
        assert ping(a, b.address) == 3
        (ea,) = await channels(a)
        assert ea["bytes"] and ea["bytes"] > 0, "the echo did not go through the CHILD SA"
        assert multicast_crosses(a, ea["interface"], b, eb["interface"], "ff02::13", 7017)
        assert multicast_crosses(b, eb["interface"], a, ea["interface"], "ff02::1a", 7017)
        # Both initiated at the same instant: after settling, one IKE SA and one CHILD SA each.
        await asyncio.sleep(2.0)
        for node in (a, b):
            (entry,) = await channels(node)
            assert (entry["ike_sas"], entry["child_sas"]) == (1, 1), entry
            sas = await node.service._vici("list_sas")
            assert len(sas) == 1 and len(sas[0].children) == 1, sas
    run(scenario, tmp_path)


def test_peer_of_another_ca_gets_no_channel(guest: None, tmp_path: Path) -> None:
    """And both sides say why, from charon's own log lines (not just "CHILD_SA failed")."""
    async def scenario(bed: Testbed) -> None:
        from acp_openwrt.lab.pki import TestCA
        other = TestCA.create(tmp_path / "other-pki", domain=bed.domain)
        a, b = bed.add_node("a"), bed.add_node("b", ca=other)
        if_a, if_b = bed.link(a, b)
        await a.new_service().start()
        await b.new_service().start()
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        async def both_failed() -> bool:
            entries = await channels(a) + await channels(b)
            return all(e["last_error"] for e in entries)
        await wait_for("both attempts to fail", both_failed, 30.0)
        errors = []
        for node in (a, b):
            assert await up_count(node) == 0
            assert acp_links(node) == []
            assert await node.service._vici("list_sas") == []
            (entry,) = await channels(node)
            print(node.name, entry["last_error"])
            errors.append(entry["last_error"])
        # Both initiate at once: a side's last verdict is its own ("not from our CA") or the
        # peer's, when the peer refused our certificate first; at least one side refused.
        assert all("not from our CA" in e or "the peer refused our certificate" in e
                   for e in errors), errors
        assert any("not from our CA" in e for e in errors), errors
        # attempts go on between the two commands: each attempt names one of the two causes
        # charon logs, depending on which side's verdict came first
        await acpctl_names_the_reason(a, "not from our CA", "the peer refused our certificate")
    run(scenario, tmp_path)


def test_expired_peer_certificate_is_named(guest: None, tmp_path: Path) -> None:
    async def scenario(bed: Testbed) -> None:
        import datetime as dt
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        a = bed.add_node("a")
        b = bed.add_node("b", not_before=past - dt.timedelta(days=1), not_after=past)
        if_a, if_b = bed.link(a, b)
        await a.new_service().start()
        await b.new_service().start()
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)

        async def named() -> bool:
            (entry,) = await channels(a)
            return "expired" in (entry["last_error"] or "")
        await wait_for("a to name b's expired certificate", named, 30.0)
        assert await up_count(a) == 0
        print("a:", (await channels(a))[0]["last_error"])
        print("b:", (await channels(b))[0]["last_error"])
    run(scenario, tmp_path)


async def acpctl_names_the_reason(node: BedNode, *words: str) -> None:
    """What the operator runs: `acpctl channels` and `acpctl diagnose` against the node: each
    names one of the specific causes `words` (never just "establishing CHILD_SA failed")."""
    import subprocess
    import sys
    assert node.service is not None
    svc = node.service
    # the testbed runs the channels part alone: the two answers diagnose starts from
    node.ctx.control.register("status", lambda _req: {
        "identity": node.ctx.identity, "enrolled": True, "channels": svc.status(),
        "namespaces": {"dull": node.dull, "acp": node.acp}, "parts": ["channels"],
        "failed_parts": {}})
    node.ctx.control.register("neighbors", lambda _req: [
        {"peer": peer, "interface": ifname, "methods": ["IKEv2"], "port": 500}
        for ifname, peer in node.links.items()])
    await node.ctx.control.start()
    try:
        for cmd in ("channels", "diagnose"):
            argv = [sys.executable, "-m", "acp_openwrt.acpctl", "--socket",
                    str(node.ctx.config.control_socket), cmd]
            done = await asyncio.to_thread(subprocess.run, argv, capture_output=True,
                                           text=True, timeout=60)
            print(f"$ acpctl {cmd}\n{done.stdout}{done.stderr}")
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("-", "channel"))]
            assert any(w in ln for ln in lines for w in words), (cmd, done.stdout, done.stderr)
    finally:
        await node.ctx.control.stop()


def test_restart_adopts_then_dead_peer_is_removed(guest: None, tmp_path: Path) -> None:
    async def scenario(bed: Testbed) -> None:
        a, b, if_a, if_b = await pair(bed)
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        await both_up(a, b)
        await asyncio.sleep(1.5)  # let the Decider delete the duplicate of the simultaneous start
        (before,) = await channels(a)
        downs_b: list[object] = []
        b.ctx.bus.subscribe(ChannelDown, downs_b.append)

        # acpd on a "crashes" and comes back: it adopts charon, the SA and the interface.
        assert a.service is not None
        charon_pid = a.service.charon.pid
        await a.service.abandon()
        restarted = a.new_service()
        await restarted.start()
        assert restarted.charon.adopted and restarted.charon.pid == charon_pid
        a.adjacency_up(if_a)
        await wait_for("adopted channel up", lambda: _is_up(a), 20.0)
        (after,) = await channels(a)
        assert after["interface"] == before["interface"]
        assert (after["ike_sas"], after["child_sas"]) == (1, 1)
        assert acp_links(a) == [before["interface"]]
        assert downs_b == [], "the peer saw the channel go down during a's restart"
        route_via(a, b, after["interface"])
        (eb,) = await channels(b)
        route_via(b, a, eb["interface"])
        assert ping(a, b.address) == 3

        # b's charon dies for good: a notices by DPD and removes the interface.
        assert b.service is not None
        await b.service.abandon()
        os.kill(b.service.charon.pid, 9)
        downs_a: list[object] = []
        a.ctx.bus.subscribe(ChannelDown, downs_a.append)
        dpd = 1 + restarted.charon.settings.dead_peer_seconds()
        async def gone() -> bool:
            return acp_links(a) == [] and bool(downs_a)
        took = await wait_for("interface removal after the peer died", gone, dpd + 5.0)
        assert took <= dpd + 5.0
        assert [type(e) for e in downs_a] == [ChannelDown]

        # A clean stop leaves nothing behind: no interfaces, no loopback address, no charon.
        await restarted.stop()
        assert acp_links(a) == []
        assert not _has_address(a)
        assert not restarted.charon.vici_socket.exists()
        assert charon_pid is not None and _gone(charon_pid)
    run(scenario, tmp_path)


def _gone(pid: int) -> bool:
    """The process exited (a zombie not yet reaped counts as gone)."""
    proc = Path(f"/proc/{pid}")
    return not proc.exists() or "zombie" in (proc / "status").read_text()


async def _is_up(node: BedNode) -> bool:
    return await up_count(node) == 1


def _has_address(node: BedNode) -> bool:
    from pyroute2 import IPRoute

    def addresses() -> list[str]:
        with IPRoute() as ipr:
            return [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=socket.AF_INET6)]
    return node.address in netns.call_in(node.acp, addresses)


def test_three_nodes_in_a_line(guest: None, tmp_path: Path) -> None:
    """Also the identity fallbacks: m has the ACP address as iPAddress SAN (ID_IPV6_ADDR), a
    only the rfc822Name carrier, c neither (subject DN)."""
    async def scenario(bed: Testbed) -> None:
        a = bed.add_node("a", ip_san=False, rfc822=True)
        m = bed.add_node("m")
        c = bed.add_node("c", ip_san=False)
        a_m, m_a = bed.link(a, m)
        m_c, c_m = bed.link(m, c)
        for node in (a, m, c):
            await node.new_service().start()
        assert _has_address(m)
        a.adjacency_up(a_m)
        m.adjacency_up(m_a)
        m.adjacency_up(m_c)
        c.adjacency_up(c_m)
        async def settled() -> bool:
            return (await up_count(m), await up_count(a), await up_count(c)) == (2, 1, 1)
        await wait_for("two channels on the middle node", settled, 40.0)
        entries = {e["dull_interface"]: e for e in await channels(m)}
        assert entries[m_a]["peer_node_name"] == a.ctx.identity["acp_node_name"]
        assert entries[m_c]["peer_node_name"] == c.ctx.identity["acp_node_name"]
        assert len(acp_links(m)) == 2
        ids = {sa.remote_id for sa in await m.service._vici("list_sas")}
        assert ids == {a.ctx.identity["acp_node_name"], "CN=c"}, ids
        assert {sa.remote_id for sa in await a.service._vici("list_sas")} == {m.address}
        route_via(m, c, entries[m_c]["interface"])
        (ec,) = await channels(c)
        route_via(c, m, ec["interface"])
        assert ping(m, c.address) == 3
    run(scenario, tmp_path)


def multicast_crosses(src: BedNode, src_if: str, dst: BedNode, dst_if: str, group: str,
                      port: int) -> bool:
    from acp_openwrt.channels.xfrm_interface import list_xfrm
    src_index = next(x.index for x in netns.call_in(src.acp, list_xfrm) if x.ifname == src_if)
    dst_index = next(x.index for x in netns.call_in(dst.acp, list_xfrm) if x.ifname == dst_if)
    rx = netns.socket_in(dst.acp, socket.AF_INET6, socket.SOCK_DGRAM, 0)
    tx = netns.socket_in(src.acp, socket.AF_INET6, socket.SOCK_DGRAM, 0)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(("::", port))
        rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                      socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", dst_index))
        rx.settimeout(3.0)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, src_index)
        payload = os.urandom(8)
        for _ in range(3):
            tx.sendto(payload, (group, port, 0, src_index))
            try:
                data, _ = rx.recvfrom(100)
            except TimeoutError:
                continue
            if data == payload:
                return True
        return False
    finally:
        rx.close()
        tx.close()


def test_charon_killed_is_restarted_and_the_channel_returns(guest: None, tmp_path: Path) -> None:
    async def scenario(bed: Testbed) -> None:
        a, b, if_a, if_b = await pair(bed)
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        await both_up(a, b)
        assert a.service is not None
        old_pid = a.service.charon.pid
        assert old_pid is not None
        os.kill(old_pid, 9)
        async def restarted() -> bool:
            return a.service.charon.restarts == 1 and a.service.charon.pid != old_pid
        await wait_for("charon restarted by the supervisor", restarted, 15.0)
        # a's new charon starts over at once, whatever its role; its INITIAL_CONTACT makes b
        # drop the SA to the dead charon (b's DPD never would: the new SA's traffic keeps the
        # inbound policy they share looking used).
        await both_up(a, b, limit=40.0)

        async def single() -> bool:
            entries = [await channels(node) for node in (a, b)]
            return all([(e["state"], e["ike_sas"], e["child_sas"]) for e in x] == [("up", 1, 1)]
                       for x in entries)
        await wait_for("one IKE SA and one CHILD SA on each side", single, 10.0)
        for node in (a, b):
            assert len(acp_links(node)) == 1
    run(scenario, tmp_path)

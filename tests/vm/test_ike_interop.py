"""IKEv2 with peers that are not configured like us (issue 16), in one guest.

- RFC 8994 §6.8.3.1.2 requires RFC 8247: a peer that offers only RFC 8247's MUST set for the
  IKE SA (AES-CBC, HMAC-SHA2-256-128, PRF-HMAC-SHA2-256, MODP-2048) gets a channel, while two
  of our nodes still agree on AES-GCM-16-256 and group 19.
- ID_IPV6_ADDR needs the ACP address as an iPAddress subjectAltName with strongSwan: with the
  address only in the AcpNodeName otherName, charon refuses a peer that claims it ("no trusted
  ... public key found for '<address>'"), so such nodes fall back to the subject DN (or the
  rfc822Name carrier); a mixed pair uses ID_IPV6_ADDR in the one direction it can.

The "peer" is our own node whose connection is rewritten on its way to its charon (proposals,
identity): what goes on the wire is what a plain swanctl peer configured that way sends.
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import vici

from acp_openwrt.channels.vici_driver import ViciDriver
from acp_openwrt.events import ChannelDown
from acp_openwrt.lab.channel_testbed import BedNode, Testbed, route_via
from acp_openwrt.lab.channel_testbed import ping as echo
from acp_openwrt.lab.channel_testbed import run_scenario as run

# RFC 8247 §2.1-§2.4 MUSTs only: what a minimal conforming IKEv2 peer offers.
RFC8247_MUST_ONLY = ["aes128-sha256-prfsha256-modp2048", "aes256-sha256-prfsha256-modp2048"]


def rewriting(*, proposals: list[str] | None = None,
              local_id: str | None = None) -> Callable[[Any], ViciDriver]:
    """A driver factory whose connections carry other IKE proposals or another identity."""
    class Rewriting(ViciDriver):
        def load_connection(self, name: str, conn: dict[str, Any]) -> None:
            conn = dict(conn)
            if proposals is not None:
                conn["proposals"] = list(proposals)
            if local_id is not None:
                conn["local"] = dict(conn["local"], id=local_id)
            super().load_connection(name, conn)
    return lambda supervisor: Rewriting(supervisor.vici_socket)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def ike_sas(node: BedNode) -> list[dict[str, Any]]:
    """charon's own list-sas, raw (algorithms and identities as strongSwan names them), from
    a VICI session of our own."""
    assert node.service is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(node.service.charon.vici_socket))
    try:
        out = []
        for entry in vici.Session(sock).list_sas():
            for sa in entry.values():
                children = [{k: _text(v) for k, v in c.items()}
                            for c in (sa.get("child-sas") or {}).values()]
                out.append({**{k: _text(v) for k, v in sa.items() if k != "child-sas"},
                            "child-sas": children})
        return out
    finally:
        sock.close()


def established(node: BedNode) -> list[dict[str, Any]]:
    return [sa for sa in ike_sas(node) if sa.get("state") == "ESTABLISHED"]


def algorithms(sa: dict[str, Any]) -> dict[str, Any]:
    return {k: sa.get(k) for k in ("encr-alg", "encr-keysize", "integ-alg", "prf-alg",
                                   "dh-group", "local-id", "remote-id")}


async def channels(node: BedNode) -> list[dict[str, Any]]:
    reply = await node.ctx.control.dispatch(b'{"cmd": "channels"}')
    assert reply["ok"], reply
    return list(reply["result"])


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], within: float) -> None:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.2)


async def up(*nodes: BedNode, each: int = 1, within: float = 60.0) -> None:
    async def check() -> bool:
        for node in nodes:
            if sum(1 for e in await channels(node) if e["state"] == "up") != each:
                return False
        return True
    await wait_for(f"{each} channel(s) up on {[n.name for n in nodes]}", check, within)


def node_name(node: BedNode) -> str:
    assert node.ctx.identity is not None
    return str(node.ctx.identity["acp_node_name"])


def charon_log(node: BedNode) -> str:
    return (Path(node.ctx.config.log_dir) / "charon.log").read_text(errors="replace")


def pinged(a: BedNode, b: BedNode) -> int:
    return echo(a.acp, a.address, b.address, 3, 5.0)


async def echoes(a: BedNode, b: BedNode, within: float = 40.0) -> None:
    """Echoes from a to b get answered (three in a row). Waits out the Decider's cleanup after
    a simultaneous start, which may take the channel down and up again (a new interface: the
    static routes, RPL's stand-in here, are put back on each try)."""
    async def answered() -> bool:
        try:
            return await route_both(a, b) and await asyncio.to_thread(pinged, a, b) == 3
        except (OSError, ValueError):   # the interface went between lookup and use
            return False
    await wait_for(f"echoes {a.name} -> {b.name} over the channel", answered, within)


async def link_and_start(bed: Testbed, first: BedNode, second: BedNode,
                         options: dict[str, dict[str, Any]] | None = None) -> None:
    """A link between the two; services started where not yet (`options`: per node name,
    ChannelPart keyword arguments); both hear each other's adjacency."""
    if_first, if_second = bed.link(first, second)
    for node in (first, second):
        if node.service is None:
            await node.new_service(**(options or {}).get(node.name, {})).start()
    first.adjacency_up(if_first)
    second.adjacency_up(if_second)


async def route_both(a: BedNode, b: BedNode) -> bool:
    """Static /128s both ways over the two nodes' channel interfaces; False if either has no
    channel up to the other right now."""
    async def interface(node: BedNode, peer: BedNode) -> str | None:
        return next((e["interface"] for e in await channels(node) if e["state"] == "up"
                     and e["peer_node_name"] == node_name(peer)), None)
    if_a, if_b = await interface(a, b), await interface(b, a)
    if if_a is None or if_b is None:
        return False
    route_via(a, b, if_a)
    route_via(b, a, if_b)
    return True


def test_rfc8247_must_only_peer_gets_a_channel_and_gcm_stays_first(guest: None,
                                                                    tmp_path: Path) -> None:
    """b offers only RFC 8247's MUST set: AES-CBC/HMAC-SHA2-256/MODP-2048 is chosen and ESP is
    still AES-GCM-16-256; c is a node like us: AES-GCM-16-256 with group 19 is chosen."""
    async def scenario(bed: Testbed) -> None:
        a, b = bed.add_node("a"), bed.add_node("b")
        downs: list[object] = []
        a.ctx.bus.subscribe(ChannelDown, downs.append)
        await link_and_start(bed, a, b, {"b": {"driver_factory": rewriting(
            proposals=RFC8247_MUST_ONLY)}})
        await up(a, b)
        # Both may have initiated: every IKE SA between them must use the MUST set.
        for node in (a, b):
            sas = established(node)
            assert sas, f"{node.name}: no established IKE SA"
            for sa in sas:
                print(node.name, algorithms(sa))
                assert sa["encr-alg"] == "AES_CBC" and sa["encr-keysize"] in ("128", "256"), sa
                assert sa["integ-alg"] == "HMAC_SHA2_256_128", sa
                assert sa["prf-alg"] == "PRF_HMAC_SHA2_256", sa
                assert sa["dh-group"] == "MODP_2048", sa
                for child in sa["child-sas"]:
                    assert (child["encr-alg"], child["encr-keysize"]) == ("AES_GCM_16", "256")
        await echoes(a, b)
        print("ChannelDown events on a so far:", len(downs))

        # A second neighbour of a, configured like us: RFC 8994's suite is still the one chosen.
        c = bed.add_node("c")
        await link_and_start(bed, a, c)
        await up(c)
        await up(a, each=2)
        sas = established(c)
        assert sas, "c: no established IKE SA"
        for sa in sas:
            print("c", algorithms(sa))
            assert (sa["encr-alg"], sa["encr-keysize"], sa["dh-group"]) == ("AES_GCM_16", "256",
                                                                            "ECP_256"), sa
            assert "integ-alg" not in sa, sa
    run(scenario, tmp_path)


def test_acp_address_only_in_the_othername(guest: None, tmp_path: Path) -> None:
    """a and b: the ACP address only in the AcpNodeName otherName. Sending ID_IPV6_ADDR works
    (charon does not check its own identity against its certificate), but the receiving charon
    finds no public key for that identity and refuses: the proof that strongSwan 5.9 cannot.
    c and d, the same certificates with acpd's default identity choice (the subject DN): a
    channel, the identities charon reports being the DNs."""
    async def scenario(bed: Testbed) -> None:
        a, b = bed.add_node("a", ip_san=False), bed.add_node("b", ip_san=False)
        await link_and_start(bed, a, b, {"a": {"driver_factory": rewriting(local_id=a.address)},
                                         "b": {"driver_factory": rewriting(local_id=b.address)}})

        async def refused() -> bool:
            return all(f"no trusted ECDSA public key found for '{peer.address}'"
                       in charon_log(node) for node, peer in ((a, b), (b, a)))
        await wait_for("both charons to refuse the ID_IPV6_ADDR the certificate lacks",
                       refused, 40.0)
        for node in (a, b):
            lines = [ln for ln in charon_log(node).splitlines()
                     if "no trusted" in ln or "received end entity cert" in ln]
            print(node.name, *lines[-2:], sep="\n  ")
            assert not [e for e in await channels(node) if e["state"] == "up"]
            assert all(sa["state"] != "ESTABLISHED" for sa in ike_sas(node))
            assert f"authentication of '{node.address}' (myself)" in charon_log(node)

        c, d = bed.add_node("c", ip_san=False), bed.add_node("d", ip_san=False)
        await link_and_start(bed, c, d)
        await up(c, d)
        for node, peer in ((c, d), (d, c)):
            ids = {(sa["local-id"], sa["remote-id"]) for sa in established(node)}
            print(node.name, "IKE identities (local, remote):", ids)
            assert ids == {(f"CN={node.name}", f"CN={peer.name}")}, ids
        (ec,) = await channels(c)
        assert ec["peer_node_name"] == node_name(d)
        await echoes(c, d)
    run(scenario, tmp_path)


def test_mixed_pair_uses_id_ipv6_addr_where_the_certificate_confirms_it(guest: None,
                                                                       tmp_path: Path) -> None:
    """a has the iPAddress SAN, b only the otherName: a is known to b as ID_IPV6_ADDR = a's ACP
    address, b to a by its subject DN; acpd's peer check accepts both."""
    async def scenario(bed: Testbed) -> None:
        a, b = bed.add_node("a"), bed.add_node("b", ip_san=False)
        await link_and_start(bed, a, b)
        await up(a, b)
        ids_a = {(sa["local-id"], sa["remote-id"]) for sa in established(a)}
        ids_b = {(sa["local-id"], sa["remote-id"]) for sa in established(b)}
        print("a IKE identities (local, remote):", ids_a)
        print("b IKE identities (local, remote):", ids_b)
        assert ids_a == {(a.address, "CN=b")}, ids_a
        assert ids_b == {("CN=b", a.address)}, ids_b
        (ea,), (eb,) = await channels(a), await channels(b)
        assert ea["peer_node_name"] == node_name(b)
        assert eb["peer_node_name"] == node_name(a)
        await echoes(a, b)
        await echoes(b, a)
    run(scenario, tmp_path)

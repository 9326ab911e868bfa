"""GRASP pieces without namespaces: the API wire shapes, the stream framer's fast path, the
engine additions the service uses, and the local-socket API against a DULL GraspService with no
interfaces (only a Unix socket in a temp dir)."""
from __future__ import annotations

import asyncio
import random

import cbor2
import pytest

from acp_openwrt.grasp import api_wire as w
from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import FloodReceived, NegotiationRequested, SendMulticast
from acp_openwrt.grasp.asa_api import NegotiationReply
from acp_openwrt.grasp.client import GraspClient
from acp_openwrt.grasp.codec import decode, encode
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.errors import GraspApiError, GraspError
from acp_openwrt.grasp.messages import Flood, Locator, Objective, TaggedObjective
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.grasp.stream import StreamFramer

LL1 = bytes.fromhex("fe800000000000000000000000000001")
LL2 = bytes.fromhex("fe800000000000000000000000000002")
OBJ = Objective("EX1", c.F_SYNCH | c.F_NEG, 3, {"k": [1, b"\x00"]})
LOC = Locator(c.O_IPv6_LOCATOR, LL1, c.IPPROTO_UDP, 500)


def test_wire_round_trips() -> None:
    assert w.objective_in(cbor2.loads(cbor2.dumps(w.objective_out(OBJ)))) == OBJ
    assert w.locator_in(w.locator_out(LOC)) == LOC and w.locator_in([]) is None
    reply = NegotiationReply(7, OBJ, None)
    assert w.reply_in(cbor2.loads(cbor2.dumps(w.reply_out(reply)))) == reply
    req = NegotiationRequested(3, OBJ, LL2)
    assert w.request_in(w.request_out(req)) == req
    with pytest.raises(w.GraspDecodeError):
        w.objective_in(["", 1, 1])
    with pytest.raises(w.GraspDecodeError):
        w.locator_in([103, b"short", 6, 80])


def test_framer_fast_path_and_split_messages() -> None:
    one = encode(Flood(1, LL1, 1000, (TaggedObjective(OBJ),)))
    framer = StreamFramer(4096)
    assert framer.feed(one) == [one]
    assert framer.feed(one + one) == [one, one]  # two in a segment: the item walk splits them
    assert framer.feed(one[:5]) == [] and framer.pending == 5
    assert framer.feed(one[5:] + one[:2]) == [one] and framer.pending == 2
    big = StreamFramer(10)
    with pytest.raises(w.GraspDecodeError):
        big.feed(one)


def test_engine_floods_one_interface_and_reports_source_and_ttl() -> None:
    e = Engine(EngineConfig(dull=True), random.Random(1))
    e.add_interface("eth0", LL1)
    e.add_interface("eth1", LL2)
    an_acp = Objective("AN_ACP", c.F_SYNCH, 1, "IKEv2")
    _, outputs = e.flood([TaggedObjective(an_acp, LOC._replace(address=bytes(16)))], 5000, 0.0,
                         ifname="eth1")
    (out,) = outputs
    assert isinstance(out, SendMulticast) and out.ifname == "eth1"
    msg = decode(out.data)
    assert msg.initiator == LL2 and msg.objectives[0].locator.address == LL2
    with pytest.raises(GraspApiError) as err:
        e.flood([TaggedObjective(an_acp)], 5000, 0.0, ifname="eth9")
    assert err.value.code == GraspError.noSocket
    peer = bytes.fromhex("fe800000000000000000000000000009")
    (rx,) = e.receive_datagram("eth0", peer, encode(Flood(5, peer, 7000,
                                                          (TaggedObjective(an_acp),))), 1.0)
    assert isinstance(rx, FloodReceived) and (rx.source, rx.ttl_ms, rx.expires) == (peer, 7000, 8.0)


def test_engine_deregister_objective_stops_answering() -> None:
    e = Engine(EngineConfig(address=bytes.fromhex("fd000000000000000000000000000001")),
               random.Random(1))
    neg = Objective("EX3", c.F_NEG | c.F_SYNCH | c.F_DISC, 6, 1)
    e.register_objective(neg)
    e.listen_negotiate(neg)
    e.listen_synchronize(neg)
    e.deregister_objective("EX3")
    assert not e.discovery.registered
    assert not e.sessions.neg_listeners and not e.sessions.syn_listeners


def test_local_api_against_a_dull_service(tmp_path) -> None:
    path = str(tmp_path / "grasp.sock")

    async def scenario() -> None:
        svc = GraspService(mode="dull", api_path=path)
        await svc.start()
        try:
            async with GraspClient(path) as g:
                asa = await g.register_asa("proxy")
                with pytest.raises(GraspApiError) as err:
                    await g.register_asa("proxy")
                assert err.value.code == GraspError.dupASA
                sid = await g.flood(asa, 1000, [(Objective("AN_Proxy", c.F_SYNCH, 1), LOC)])
                assert 0 <= sid <= c.UINT32_MAX
                assert await g.get_flood(asa, "AN_Proxy") == []
                with pytest.raises(GraspApiError) as err:  # DULL: no discovery
                    await g.discover(asa, Objective("X", c.F_DISC, 1))
                assert err.value.code == GraspError.noSecurity
                with pytest.raises(GraspApiError) as err:  # someone else's ASA nonce
                    await g.get_flood(asa._replace(nonce=asa.nonce ^ 1), "AN_Proxy")
                assert err.value.code == GraspError.noASA
                with pytest.raises(GraspApiError) as err:
                    await g._call("no_such_call")
                assert err.value.code == GraspError.unspec
                with pytest.raises(GraspApiError) as err:
                    await g._call("flood", asa=asa.nonce, ttl_ms=1, items=[[["", 1, 1], []]])
                assert err.value.code == GraspError.CBORfail
                assert svc.status()["asas"] == ["proxy"]
            await asyncio.sleep(0.05)
            assert svc.status()["asas"] == []  # the client went, and its ASA with it
            # garbage on the socket: that client is dropped, the server keeps serving
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"\xff\xff\xff not cbor")
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(cbor2.dumps([1, 2, 3]))
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
            assert svc._api.bad_requests == 2
            clients = [await GraspClient(path).connect() for _ in range(svc._api.max_clients + 1)]
            await asyncio.sleep(0.05)
            with pytest.raises(GraspApiError) as err:  # the one over the limit was refused
                await clients[-1].register_asa("late")
            assert err.value.code == GraspError.noSocket and svc._api.refused == 1
            assert (await clients[0].register_asa("early")).name == "early"
            for client in clients:
                await client.close()
            # in-process: on_flood subscriptions and their removal
            seen: list[FloodReceived] = []
            unsubscribe = svc.on_flood("AN_ACP", seen.append)
            svc.engine.add_interface("x0", LL1)
            svc._execute(svc.engine.receive_datagram("x0", LL2, encode(Flood(9, LL2, 100, (
                TaggedObjective(Objective("AN_ACP", c.F_SYNCH, 1, "IKEv2"), LOC),))), svc._now()))
            unsubscribe()
            assert len(seen) == 1 and seen[0].source == LL2 and svc._flood_subs == {}
        finally:
            await svc.stop()
        assert svc._api is None

    asyncio.run(scenario())


def test_outputs_a_callback_causes_run_after_the_current_ones_once() -> None:
    """Re-entrancy: an on_flood subscriber that floods while the service executes outputs."""
    sent: list[bytes] = []

    class FakeUdp:
        def send(self, data: bytes) -> None:
            sent.append(data)

    async def scenario() -> None:
        svc = GraspService(mode="dull")
        svc.engine.add_interface("x0", LL1)
        svc._udp["x0"] = FakeUdp()  # type: ignore[assignment]
        asa = svc.register_asa("relay")
        an_acp = Objective("AN_ACP", c.F_SYNCH, 1, "IKEv2")
        svc.on_flood("AN_ACP", lambda event: svc.flood(asa, 1000, [(an_acp, None)]))
        heard = FloodReceived("x0", LL2, an_acp, None, 1.0, LL2, 1000)
        svc._execute([heard, SendMulticast("x0", b"outer")])
        assert len(sent) == 2 and sent[0] == b"outer"  # the callback's flood after, once
        assert decode(sent[1]).initiator == LL1
        assert not svc._executing and not svc._backlog

    asyncio.run(scenario())

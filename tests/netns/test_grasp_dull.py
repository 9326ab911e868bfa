"""DULL GRASP between two namespaces on a veth: each floods AN_ACP with its link-local locator,
each hears the other's through on_flood; then interfaces come and go at run time."""

from __future__ import annotations

import asyncio
import ipaddress

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import DiscoveryHeard, FloodReceived
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.service import GraspService
from acp_openwrt.lab.topology import line


def an_acp(link_local: str) -> tuple[Objective, Locator]:
    return (
        Objective("AN_ACP", c.F_SYNCH, 1, "IKEv2"),
        Locator(c.O_IPv6_LOCATOR, ipaddress.IPv6Address(link_local).packed, c.IPPROTO_UDP, 500),
    )


def test_dull_pair_hears_each_other(topology) -> None:
    topo = topology(line(2))
    n1, n2 = topo["n1"], topo["n2"]
    if1, if2 = n1.ifname("n2"), n2.ifname("n1")
    ll1, ll2 = n1.link_local(if1), n2.link_local(if2)

    async def scenario() -> None:
        s1 = GraspService(namespace=n1.netns, mode="dull")
        s2 = GraspService(namespace=n2.netns, mode="dull")
        heard: dict[str, list[FloodReceived]] = {"n1": [], "n2": []}
        got = {"n1": asyncio.Event(), "n2": asyncio.Event()}

        def listener(name: str):
            def cb(flood: FloodReceived) -> None:
                heard[name].append(flood)
                got[name].set()

            return cb

        await s1.start()
        await s2.start()
        try:
            await s1.add_interface(if1)
            await s2.add_interface(if2)
            assert s1.interfaces == {if1: ll1}
            a1, a2 = s1.register_asa("acpd"), s2.register_asa("acpd")
            s1.on_flood("AN_ACP", listener("n1"))
            unsubscribe = s2.on_flood("AN_ACP", listener("n2"))
            s1.flood(a1, ttl_ms=210000, items=[an_acp(ll1)], ifname=if1)
            s2.flood(a2, ttl_ms=210000, items=[an_acp(ll2)], ifname=None)
            await asyncio.wait_for(asyncio.gather(got["n1"].wait(), got["n2"].wait()), 2.0)
            f1, f2 = heard["n1"][0], heard["n2"][0]
            assert (f1.ifname, f1.source, f1.initiator) == (
                if1,
                ipaddress.IPv6Address(ll2).packed,
                ipaddress.IPv6Address(ll2).packed,
            )
            assert (
                f1.locator.address == ipaddress.IPv6Address(ll2).packed and f1.locator.port == 500
            )
            assert (
                f1.objective == Objective("AN_ACP", c.F_SYNCH, 1, "IKEv2") and f1.ttl_ms == 210000
            )
            assert f2.ifname == if2 and f2.locator.address == ipaddress.IPv6Address(ll1).packed
            assert f2.expires - asyncio.get_running_loop().time() > 200
            (entry,) = s2.get_flood(a2, "AN_ACP")
            assert entry.initiator == ipaddress.IPv6Address(ll1).packed
            # a repeat flood (new session id) is delivered again: the caller refreshes its ttl
            got["n2"].clear()
            s1.flood(a1, ttl_ms=1000, items=[an_acp(ll1)])
            await asyncio.wait_for(got["n2"].wait(), 2.0)
            assert heard["n2"][-1].ttl_ms == 1000 and len(heard["n2"]) == 2
            # unsubscribed: no more callbacks; removed interface: nothing received
            unsubscribe()
            s1.flood(a1, ttl_ms=1000, items=[an_acp(ll1)])
            await asyncio.sleep(0.3)
            assert len(heard["n2"]) == 2 and s2.counters()["engine"]["flood_accepted"] == 3
            s2.remove_interface(if2)
            s1.flood(a1, ttl_ms=1000, items=[an_acp(ll1)])
            await asyncio.sleep(0.3)
            assert s2.counters()["engine"]["flood_accepted"] == 3 and s2.interfaces == {}
            # and back at run time
            await s2.add_interface(if2)
            got["n1"].clear()
            s2.flood(a2, ttl_ms=1000, items=[an_acp(ll2)])
            await asyncio.wait_for(got["n1"].wait(), 2.0)
            status = s1.status()
            assert status["mode"] == "dull" and status["interfaces"] == {if1: ll1}
            assert status["counters"]["interfaces"][if1]["received"] >= 2
        finally:
            await s1.stop()
            await s2.stop()
        assert s1.interfaces == {} and s1.counters()["interfaces"] == {}

    asyncio.run(scenario())


def test_a_solicitation_reaches_the_neighbour_as_an_event(topology) -> None:
    """A pledge's M_DISCOVERY for AN_Proxy (link-local multicast, loop count 1) reaches the
    neighbour's DULL GRASP as DiscoveryHeard from the pledge's link-local address, and nothing
    answers it by unicast; the pledge does not hear its own."""
    topo = topology(line(2))
    n1, n2 = topo["n1"], topo["n2"]
    if1, if2 = n1.ifname("n2"), n2.ifname("n1")
    ll1 = n1.link_local(if1)

    async def scenario() -> None:
        pledge = GraspService(namespace=n1.netns, mode="dull")
        proxy = GraspService(namespace=n2.netns, mode="dull")
        heard: list[DiscoveryHeard] = []
        got = asyncio.Event()
        await pledge.start()
        await proxy.start()
        try:
            await pledge.add_interface(if1)
            await proxy.add_interface(if2)
            asa = pledge.register_asa("acpd")
            proxy.on_discovery("AN_Proxy", lambda ev: (heard.append(ev), got.set()))
            pledge.on_discovery("AN_Proxy", lambda ev: heard.append(ev))
            pledge.solicit(asa, Objective("AN_Proxy", c.F_DISC | c.F_SYNCH, 1), ifname=if1)
            await asyncio.wait_for(got.wait(), 2.0)
            await asyncio.sleep(0.2)
            (event,) = heard
            assert event.ifname == if2 and event.source == ipaddress.IPv6Address(ll1).packed
            assert event.objective == Objective("AN_Proxy", c.F_DISC | c.F_SYNCH, 1)
            assert proxy.counters()["engine"]["dull_discovery_heard"] == 1
            assert pledge.counters()["engine"]["dull_solicited"] == 1
        finally:
            await pledge.stop()
            await proxy.stop()

    asyncio.run(scenario())

"""Bounded channel work under forged neighbours (issue 15): node a hears hundreds of AN_ACP
locators that nobody answers for (AdjacencyUp events, as discovery would publish them), and
one real neighbour b. b's channel must come up while the fakes are tried, a's charon and
kernel must hold only what the caps allow, and after an acpd restart the fakes' leftovers in
charon are unloaded, not adopted."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from acp_openwrt import netns
from acp_openwrt.channels.attempts import Limits
from acp_openwrt.channels.xfrm_interface import list_xfrm
from acp_openwrt.events import AdjacencyUp
from acp_openwrt.lab.channel_testbed import BedNode, Testbed
from acp_openwrt.lab.channel_testbed import run_scenario as run

FAKES = 300
LIMITS = Limits()   # the shipped caps





def flood(node: BedNode, ifname: str, count: int, start: int = 1) -> None:
    for n in range(start, start + count):
        node.ctx.bus.publish(AdjacencyUp(f"fe80::dead:{n // 0x10000:x}:{n % 0x10000:x}",
                                         ifname, ("IKEv2",), 500))


async def entries(node: BedNode) -> list[dict]:
    reply = await node.ctx.control.dispatch(b'{"cmd": "channels"}')
    assert reply["ok"], reply
    return reply["result"]


async def real_up(node: BedNode, ifname: str) -> bool:
    return any(e["dull_interface"] == ifname and e["state"] == "up"
               and not e["peer"].startswith("fe80::dead") for e in await entries(node))


class Watch:
    """The most a's charon and DULL namespace held at any time, sampled while waiting."""

    def __init__(self, node: BedNode) -> None:
        self.node = node
        self.conns = self.sas = self.links = 0

    async def sample(self) -> None:
        svc = self.node.service
        assert svc is not None
        self.conns = max(self.conns, len(await svc._vici("list_connections")))
        self.sas = max(self.sas, len(await svc._vici("list_sas")))
        self.links = max(self.links, len(netns.call_in(self.node.dull, list_xfrm)))

    async def until(self, what: str, check, limit: float) -> float:
        start = time.monotonic()
        while not await check():
            await self.sample()
            if time.monotonic() - start > limit:
                raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
            await asyncio.sleep(0.2)
        return time.monotonic() - start


def test_real_neighbour_gets_its_channel_among_300_fakes(guest: None, tmp_path: Path) -> None:
    async def scenario(bed: Testbed) -> None:
        a, b = bed.add_node("a"), bed.add_node("b")
        if_a, if_b = bed.link(a, b)
        svc = a.new_service(initial_retry=10.0, limits=LIMITS)
        await svc.start()
        await b.new_service().start()
        flood(a, if_a, FAKES)          # the fakes first: the real one is heard last
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        watch = Watch(a)
        took = await watch.until("b's channel on a", lambda: real_up(a, if_a), 60.0)
        await watch.until("a round of fakes tried", lambda: _tried(svc, 3 * LIMITS.per_node),
                          60.0)
        status = svc.status()
        print(f"real channel among {FAKES} fakes: {took:.1f} s; a's charon held at most "
              f"{watch.conns} connections, {watch.sas} IKE SAs, DULL {watch.links} xfrm "
              f"interfaces; attempts {status['attempts']}, parked {status['parked']}")
        bound = LIMITS.per_node + 2     # in flight (+1 for a knock) and b's own
        assert watch.conns <= bound and watch.sas <= bound and watch.links <= bound
        assert len(svc.table) <= LIMITS.candidates_per_interface + 1
        # the silent ones stepped back behind the parked ones: the line only turned over
        assert status["parked"]["candidates"] >= FAKES - LIMITS.candidates_per_interface
    run(scenario, tmp_path)


def test_a_flooded_link_does_not_delay_a_neighbour_on_another(guest: None,
                                                               tmp_path: Path) -> None:
    """The fakes hold every slot of link a-c; a's own attempt to b on link a-b starts at once
    (b is made ready to answer first, and b's knock happens before a knows b: no shortcut)."""
    async def scenario(bed: Testbed) -> None:
        a, b, c = bed.add_node("a"), bed.add_node("b"), bed.add_node("c")
        if_ab, if_ba = bed.link(a, b)
        if_ac, _ = bed.link(a, c)     # c stays silent: its link is where the fakes are
        svc = a.new_service(initial_retry=10.0, limits=LIMITS)
        await svc.start()
        await b.new_service(initial_retry=30.0).start()
        b.adjacency_up(if_ba)           # b's attempt is refused (a knows no b): b backs off
        await Watch(b).until("b's attempt refused", lambda: _refused(b), 20.0)
        flood(a, if_ac, FAKES)
        await Watch(a).until("the flooded link's slots taken", lambda: _in_flight(svc), 20.0)
        a.adjacency_up(if_ab)
        took = await Watch(a).until("b's channel on a", lambda: real_up(a, if_ab), 30.0)
        print(f"real channel on a quiet link next to {FAKES} fakes: {took:.1f} s")
        assert took <= 15.0
    run(scenario, tmp_path)


def test_restart_unloads_the_fakes_and_adopts_the_real_channel(guest: None,
                                                               tmp_path: Path) -> None:
    async def scenario(bed: Testbed) -> None:
        a, b = bed.add_node("a"), bed.add_node("b")
        if_a, if_b = bed.link(a, b)
        svc = a.new_service(initial_retry=10.0, limits=LIMITS)
        await svc.start()
        await b.new_service().start()
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        await Watch(a).until("b's channel on a", lambda: real_up(a, if_a), 40.0)
        flood(a, if_a, 20)              # below the caps: nobody parked, the silent back off
        await Watch(a).until("fakes in flight", lambda: _in_flight(svc), 20.0)

        async def given_up() -> bool:
            fakes = [e for e in await entries(a) if e["peer"].startswith("fe80::dead")]
            return any(e["failures"] for e in fakes) and all(
                e["last_error"] == "peer not answering" and (e["retry_in_s"] or 0) > 0
                for e in fakes if e["failures"])
        await Watch(a).until("fakes given up as not answering", given_up, 30.0)
        conns_before = await svc._vici("list_connections")
        assert len(conns_before) > 1
        await svc.abandon()             # acpd "crashes" with fake attempts under way
        restarted = a.new_service(initial_retry=10.0, limits=LIMITS)
        await restarted.start()
        conns = [c.name for c in await restarted._vici("list_connections")]
        (entry,) = await entries(a)
        assert entry["adopted"] and not entry["peer"].startswith("fe80::dead")
        assert len(conns) == 1, conns

        async def no_fake_sas() -> bool:
            return all(not sa.remote_host.startswith("fe80::dead")
                       for sa in await restarted._vici("list_sas"))
        await Watch(a).until("the fakes' half-open SAs gone", no_fake_sas, 5.0)
        assert len(netns.call_in(a.dull, list_xfrm)) + len(netns.call_in(a.acp, list_xfrm)) == 1
    run(scenario, tmp_path)


async def _tried(svc, n: int) -> bool:
    return svc.slots.status()["started"] >= n


async def _in_flight(svc) -> bool:
    return svc.slots.status()["in_flight"] >= 2


async def _refused(node: BedNode) -> bool:
    return any(e["failures"] for e in await entries(node))

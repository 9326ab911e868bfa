"""The ACP map's gathering core and node report, with plain data (sans-I/O, `now` passed in)."""
from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from acp_openwrt.acpmap.core import (
    Ask,
    Finished,
    Limits,
    MapGatherer,
    NodeReport,
    ReportError,
    parse_report,
)
from acp_openwrt.acpmap.report import build_report, peer_address, route_seeds, rpl_state
from acp_openwrt.control import api

PREFIX = ipaddress.IPv6Network("fd89:b714:f3db::/48")


def addr(n: int) -> str:
    return str(PREFIX.network_address + 0x100 * n)


def report(n: int, peers: list[int], parent: int | None = None, **kw: Any) -> NodeReport:
    return NodeReport(address=addr(n), name=f"node{n}", roles=kw.pop("roles", []),
                      state=kw.pop("state", "attached"), rank=kw.pop("rank", 512),
                      parent=addr(parent) if parent is not None else None,
                      channels=[addr(p) for p in peers])


# a line 0 - 1 - 2 - 3, 0 is the root
LINE = {0: report(0, [1], roles=["registrar", "root"], state="root", rank=256),
        1: report(1, [0, 2], parent=0), 2: report(2, [1, 3], parent=1),
        3: report(3, [2], parent=2)}


def run(gatherer: MapGatherer, answer: Any, now: float = 100.0,
        step: float = 0.01) -> list[Ask]:
    """Answer every Ask at once with answer(address) (None: no answer), until Finished."""
    asked: list[Ask] = []
    todo = [o for o in gatherer.start(now)]
    while todo:
        out = todo.pop(0)
        if isinstance(out, Finished):
            break
        asked.append(out)
        now += step
        value = answer(out.address)
        if value is None:
            continue
        todo += gatherer.answered(out.address, value, now)
        if not todo and not gatherer.done:
            due = gatherer.next_timer()
            assert due is not None
            todo += gatherer.handle_timer(due)
    while not gatherer.done:
        due = gatherer.next_timer()
        assert due is not None
        gatherer.handle_timer(due)
    return asked


def by_address(reports: dict[int, NodeReport]) -> dict[str, dict[str, Any]]:
    return {r.address: r.to_value() for r in reports.values()}


def test_a_line_is_gathered_hop_by_hop_from_the_root() -> None:
    values = by_address(LINE)
    g = MapGatherer(LINE[0], prefix=PREFIX)
    asked = run(g, values.get)
    assert [a.address for a in asked] == [addr(1), addr(2), addr(3)]
    result = g.result(200.0)
    assert api.problems(result, api.MapAnswer) == []
    assert result["complete"] is True
    assert [n["address"] for n in result["nodes"]] == [addr(i) for i in range(4)]
    assert [n["hops"] for n in result["nodes"]] == [0, 1, 2, 3]
    assert result["nodes"][0]["origin"] and result["nodes"][0]["roles"] == ["registrar", "root"]
    assert result["channels"] == [{"a": addr(i), "b": addr(i + 1), "confirmed": True}
                                  for i in range(3)]
    assert result["parents"] == [{"child": addr(i + 1), "parent": addr(i)} for i in range(3)]


def test_any_node_can_gather_and_seeds_are_asked() -> None:
    values = by_address(LINE)
    g = MapGatherer(LINE[2], prefix=PREFIX, seeds=[addr(0), "2001:db8::1", "junk"])
    asked = run(g, values.get)
    # the seed inside the ACP's prefix is asked; the others are not followed
    assert {a.address for a in asked} == {addr(0), addr(1), addr(3)}
    assert g.result(1.0)["complete"]


def test_a_silent_node_times_out_and_the_map_says_so() -> None:
    values = by_address(LINE)
    g = MapGatherer(LINE[0], prefix=PREFIX, limits=Limits(ask_timeout=2.0))
    run(g, lambda a: None if a == addr(2) else values.get(a))
    result = g.result(200.0)
    assert result["complete"] is False
    node2 = next(n for n in result["nodes"] if n["address"] == addr(2))
    assert node2["reached"] is False and node2["error"] == "timeout"
    assert addr(3) not in {n["address"] for n in result["nodes"]}  # only 2 knew of it
    # 1's channel to 2 is drawn, unconfirmed (2 did not speak)
    assert {"a": addr(1), "b": addr(2), "confirmed": False} in result["channels"]
    assert result["counters"]["asks_timed_out"] == 1


def test_failures_and_late_answers_are_counted() -> None:
    g = MapGatherer(LINE[0], prefix=PREFIX)
    out = g.start(0.0)
    assert out == [Ask(addr(1), 2.0)]
    out = g.failed(addr(1), "noSynchReply", 0.5)
    assert out == [Finished(False)] and g.done
    assert g.answered(addr(1), LINE[1].to_value(), 0.6) == []
    assert g.result(1.0)["nodes"][1]["error"] == "noSynchReply"
    assert g.counters["late_answers"] == 1


def test_the_deadline_ends_everything_and_parallel_asks_are_capped() -> None:
    # a star: the origin has 20 peers, none answers
    origin = report(0, list(range(1, 21)))
    g = MapGatherer(origin, prefix=PREFIX, limits=Limits(max_parallel=4, ask_timeout=10,
                                                          deadline=3.0))
    out = g.start(0.0)
    assert len(out) == 4 and all(isinstance(o, Ask) for o in out)
    assert all(o.timeout == 3.0 for o in out if isinstance(o, Ask))  # capped by the deadline
    assert g.next_timer() == 3.0
    out = g.handle_timer(3.0)
    assert out == [Finished(False)]
    result = g.result(3.0)
    assert result["counters"]["deadline_gave_up"] == 20
    assert result["duration_s"] == 3.0
    assert g.next_timer() is None


def test_a_hostile_node_cannot_blow_up_the_map() -> None:
    limits = Limits(max_nodes=16, max_channels=8)
    huge = {"v": 1, "address": addr(1), "name": "x" * 100000,
            "channels": [addr(i) for i in range(1000, 1030)]}
    fake_peers = {"v": 1, "address": addr(1), "name": "evil" * 10,
                  "channels": [addr(i) for i in range(100, 140)] + ["fe80::1", "ff02::1",
                                                                    "2001:db8::1", 7, None]}

    def answer(a: str) -> Any:
        if a == addr(1):
            return fake_peers
        return {"v": 1, "address": a, "channels": [addr(i) for i in range(200, 300)]}

    g = MapGatherer(report(0, [1]), prefix=PREFIX, limits=limits)
    asked = run(g, answer)
    result = g.result(10.0)
    assert len(result["nodes"]) == 16 and len(asked) == 15
    assert result["complete"] is False
    assert result["counters"]["nodes_over_limit"] > 0
    assert result["counters"]["channels_cut"] > 0
    assert all(len(n["name"] or "") <= 256 for n in result["nodes"])
    # every edge ends at a node on the map
    on_map = {n["address"] for n in result["nodes"]}
    assert all(c["a"] in on_map and c["b"] in on_map for c in result["channels"])
    with pytest.raises(ReportError, match="report_too_large"):
        parse_report(huge, prefix=PREFIX, limits=Limits(max_report_bytes=8192))


@pytest.mark.parametrize("value,reason", [
    ("text", "report_not_a_map"), ({"v": 2, "address": addr(1)}, "report_version"),
    ({"v": 1, "address": "2001:db8::1"}, "report_bad_address"),
    ({"v": 1, "address": "fe80::1"}, "report_bad_address"),
    ({"v": 1}, "report_bad_address"),
])
def test_malformed_reports_are_refused(value: Any, reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        parse_report(value, prefix=PREFIX)
    g = MapGatherer(report(0, [1]), prefix=PREFIX)
    g.start(0.0)
    g.answered(addr(1), value, 0.1)
    assert g.counters[reason] == 1
    assert g.result(0.2)["nodes"][1]["reached"] is False


def test_odd_fields_are_dropped_not_trusted() -> None:
    r, cut = parse_report({"v": 1, "address": addr(1), "roles": ["root", "god", 3],
                           "state": "on fire", "rank": -5, "parent": "::1",
                           "name": "bad\x00name", "channels": [addr(1), addr(2), addr(2)]},
                          prefix=PREFIX)
    assert r.roles == ["root"] and r.state is None and r.rank is None and r.parent is None
    assert r.name is None and r.channels == [addr(2)] and cut == 0


def test_a_node_speaks_only_for_its_own_address() -> None:
    g = MapGatherer(report(0, [1]), prefix=PREFIX)
    g.start(0.0)
    liar = report(5, [0, 1, 7]).to_value()   # answers at addr(1) but claims to be addr(5)
    g.answered(addr(1), liar, 0.1)
    result = g.result(0.2)
    assert addr(5) not in {n["address"] for n in result["nodes"]}
    assert g.counters["report_address_mismatch"] == 1


# -- the node's own report --------------------------------------------------------------------

RPL_MEMBER = {"implementation": "acpd", "running": True, "role": "member", "rank": 512,
              "parents": [{"address": "fe80::2", "ifname": "acp-b", "preferred": False,
                           "rank": 300},
                          {"address": "fe80::1", "ifname": "acp-a", "preferred": True,
                           "rank": 256}],
              "routes": []}


def test_own_report_maps_the_rpl_parent_to_the_channel_peer() -> None:
    r = build_report(address=addr(1), node_name="n@acp.example", registrar=False, root=False,
                     rpl=RPL_MEMBER, channels={"acp-a": addr(0), "acp-b": addr(2)})
    assert r.state == "attached" and r.rank == 512 and r.parent == addr(0)
    assert r.channels == [addr(0), addr(2)] and r.roles == []
    root = build_report(address=addr(0), node_name=None, registrar=True, root=False,
                        rpl={"running": True, "role": "root", "rank": 256, "parents": []},
                        channels={})
    assert root.state == "root" and root.roles == ["registrar", "root"]
    assert rpl_state(None) == ("no-rpl", None)
    assert rpl_state({"running": True, "role": "unattached", "rank": None,
                      "parents": []}) == ("detached", None)
    value = r.to_value()
    assert parse_report(value, prefix=PREFIX)[0] == r


def test_peer_address_from_an_acp_node_name() -> None:
    hexaddr = "fd89b714f3db00000200000064000000"
    assert peer_address(f"{hexaddr}+area51@acp.example.com") == \
        str(ipaddress.IPv6Address(int(hexaddr, 16)))
    assert peer_address("0+@acp.example.com") is None
    assert peer_address("not a name") is None


def test_route_seeds_are_the_dao_targets() -> None:
    from acp_openwrt.identity.address import zone_address
    a = zone_address("acp.example.com", 1, 5)
    b = zone_address("acp.example.com", 1, 6)
    routes = [{"prefix": str(a.prefix), "kind": "unicast"},
              {"prefix": str(b.prefix), "kind": "unicast"},
              {"prefix": "fd00::/8", "kind": "blackhole"},
              {"prefix": "fd89:b714:f3db:2001::/64", "kind": "unicast"},
              {"prefix": "bogus", "kind": "unicast"}]
    assert route_seeds(routes, str(b.address)) == [str(a.address)]


# -- acpctl map ------------------------------------------------------------------------------

def test_acpctl_map_text_and_json(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from acp_openwrt import acpctl
    from acp_openwrt.commands import map as map_command
    values = by_address(LINE)
    g = MapGatherer(LINE[0], prefix=PREFIX)
    run(g, lambda a: None if a == addr(3) else values.get(a))
    answer = g.result(1.0)
    monkeypatch.setattr(map_command, "node_request", lambda _args, cmd: answer)
    assert acpctl.main(["map"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"ACP map from {addr(0)}: 4 nodes (3 answered), 3 channels")
    assert "(incomplete)" in text and "timeout" in text and "one end" in text
    tree = text.split("RPL (preferred parents):\n", 1)[1].splitlines()
    assert tree[0].startswith(f"  {addr(0)} (node0) root rank 256 [registrar] [root]")
    assert tree[1].startswith(f"    {addr(1)} (node1) attached")
    assert tree[2].startswith(f"      {addr(2)} (node2) attached")
    assert acpctl.main(["map", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == answer


# -- the part, with a stand-in ASA API (no network) ----------------------------------------

class FakeGrasp:
    """register/listen/synchronize as AsaApi has them; synchronize answers from `reports`
    (an address missing: never answers; None: refused)."""

    def __init__(self, reports: dict[str, Any]) -> None:
        self.reports = reports
        self.listening: dict[str, Any] = {}
        self.asked: list[str] = []

    def register_asa(self, name: str) -> str:
        return name

    def deregister_asa(self, asa: str) -> None:
        self.listening.clear()

    def register_objective(self, asa: str, objective: Any, **kw: Any) -> None:
        pass

    def listen_synchronize(self, asa: str, objective: Any) -> None:
        self.listening[objective.name] = objective.value

    async def synchronize(self, asa: str, objective: Any, peer: Any = None,
                          timeout_ms: int | None = None, ifname: str | None = None) -> Any:
        from acp_openwrt.grasp.errors import GraspApiError, GraspError
        address = str(ipaddress.IPv6Address(peer.address))
        self.asked.append(address)
        if address not in self.reports:
            await asyncio.sleep(3600)
        if self.reports[address] is None:
            raise GraspApiError(GraspError.noSynchReply, objective.name)
        return objective._replace(value=self.reports[address])


def make_part(tmp_path: Any, grasp: FakeGrasp, channels: dict[str, int]) -> Any:
    from acp_openwrt.acpmap.part import MapPart
    from acp_openwrt.config import AcpConfig
    from acp_openwrt.control.server import ControlServer
    from acp_openwrt.events import ChannelUp, EventBus
    from acp_openwrt.node_context import NodeContext, Ports

    class Port:
        def asa_api(self) -> Any:
            return grasp

        async def find_est_server(self) -> None:
            return None

    ctx = NodeContext(config=AcpConfig(registrar=True), bus=EventBus(),
                      control=ControlServer(tmp_path / "c.sock"),
                      identity={"acp_address": addr(0), "acp_node_name": "n0@acp.example"})
    ctx.ports = Ports(acp_grasp=Port())  # type: ignore[arg-type]
    part = MapPart(ctx, Limits(ask_timeout=0.2, deadline=0.6))
    for ifname, n in channels.items():
        hexaddr = f"{int(ipaddress.IPv6Address(addr(n))):032x}"
        ctx.bus.publish(ChannelUp("fe80::1", "d", ifname, f"{hexaddr}+@acp.example"))
    return part


def test_the_part_answers_for_itself_and_gathers_through_its_port(tmp_path: Any) -> None:
    from acp_openwrt.acpmap.core import OBJECTIVE
    reports = {addr(1): LINE[1].to_value(), addr(2): None}  # 2 refuses, 3 is never reached

    async def scenario() -> None:
        grasp = FakeGrasp(reports)
        part = make_part(tmp_path, grasp, {"acp-1": 1})
        await part.start()
        mine = grasp.listening[OBJECTIVE]
        assert mine["address"] == addr(0) and mine["channels"] == [addr(1)]
        assert mine["roles"] == ["registrar"] and mine["state"] == "no-rpl"
        first, second = await asyncio.gather(part._control({}), part._control({}))
        assert first is second and grasp.asked == [addr(1), addr(2)]  # one gathering
        nodes = {n["address"]: n for n in first["nodes"]}
        assert nodes[addr(2)]["error"] == "noSynchReply"
        assert await part._control({}) is first  # answered again while young
        await part.stop()
        assert part.status()["answering"] is False

    asyncio.run(scenario())


def test_the_part_gives_up_on_silent_nodes_at_the_deadline(tmp_path: Any) -> None:
    many = report(0, list(range(1, 40)))

    async def scenario() -> None:
        grasp = FakeGrasp({})
        part = make_part(tmp_path, grasp, {f"acp-{i}": i for i in range(1, 40)})
        await part.start()
        assert len(grasp.listening["ACP-node-report:32473"]["channels"]) == len(many.channels)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await part._control({})
        assert loop.time() - started < 1.0
        assert answer["complete"] is False and len(answer["nodes"]) == 40
        assert len(grasp.asked) < 40  # 8 at a time, 0.2 s each, 0.6 s in all
        assert answer["counters"]["deadline_gave_up"] > 0
        await part.stop()

    asyncio.run(scenario())

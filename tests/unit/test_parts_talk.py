"""How parts talk: events (every type in acp_openwrt.events) and typed ports on NodeContext that
the coordinator fills when it builds the parts and clears before it stops their provider."""
from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest

import acp_openwrt
from acp_openwrt import coordinator, events
from acp_openwrt.config import AcpConfig
from acp_openwrt.connect.config import ConnectConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.coordinator import Node, part_names
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext, Part, Ports

pytestmark = pytest.mark.unit

SRC = Path(acp_openwrt.__file__).parent
IDENTITY = {"acp_node_name": "fd89b714f3db00000200000064000001+@acp.example.com",
            "acp_address": "fd89:b714:f3db:0:200:0:6400:1"}
EVENT_NAMES = {cls.__name__ for cls in typing.get_args(events.Event)}


# -- events --------------------------------------------------------------------------------

def test_the_event_union_names_every_event_class_of_events_py() -> None:
    defined = {name for name, obj in vars(events).items()
               if isinstance(obj, type) and dataclasses.is_dataclass(obj)
               and obj.__module__ == events.__name__}
    assert defined == EVENT_NAMES
    for cls in typing.get_args(events.Event):
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]


def _bus_calls() -> list[tuple[str, str, str]]:
    """(file, method, class name) of every bus.publish(X(...)) and bus.subscribe(X, ...)."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("publish", "subscribe") and node.args):
                continue
            receiver = ast.unparse(node.func.value)
            if not receiver.endswith("bus"):
                continue
            arg = node.args[0]
            target = arg.func if node.func.attr == "publish" and isinstance(arg, ast.Call) \
                else arg
            if isinstance(target, ast.Attribute):
                found.append((str(path.relative_to(SRC)), node.func.attr, target.attr))
            elif isinstance(target, ast.Name):
                found.append((str(path.relative_to(SRC)), node.func.attr, target.id))
    return found


def test_everything_on_the_bus_is_an_event_of_events_py() -> None:
    calls = _bus_calls()
    assert len(calls) > 20
    # `kind` (control/part.py loops over event types) and variables named like `event`,
    # `heard` or `start` are checked by mypy (EventBus.publish takes an Event)
    named = [(f, m, n) for f, m, n in calls if n[0].isupper()]
    assert named and all(n in EVENT_NAMES for _f, _m, n in named), \
        [c for c in named if c[2] not in EVENT_NAMES]
    others = [p for p in SRC.rglob("events.py") if p != SRC / "events.py"]
    assert others == []


# -- the lifecycle hooks -----------------------------------------------------------------

@pytest.mark.parametrize("identity", [None, IDENTITY])
def test_every_part_derives_from_part(identity: dict[str, Any] | None) -> None:
    config = AcpConfig(registrar=True, registrar_domain="acp.example.com",
                       connect=(ConnectConfig("bmc", "eth2", subnet_id=1),))
    for spec in part_names(config, identity) + part_names(AcpConfig(), identity):
        module, _, cls = spec.partition(":")
        part = getattr(importlib.import_module(f"acp_openwrt.{module}"), cls)
        assert issubclass(part, Part), spec


def test_only_the_acp_grasp_part_provides_a_port() -> None:
    from acp_openwrt.grasp.part import AcpGraspPart
    ctx = NodeContext(AcpConfig(), EventBus(), ControlServer(Path("/nonexistent")))
    part = AcpGraspPart(ctx)
    assert part.ports() == Ports(acp_grasp=part)
    assert part.asa_api() is None  # not started: the port is there, its GRASP is not
    assert asyncio.run(part.find_est_server()) is None


def test_ports_merge_and_go() -> None:
    a, b = object(), object()
    ports = Ports().merged(Ports(acp_grasp=a))  # type: ignore[arg-type]
    assert ports.acp_grasp is a and ports.names() == ["acp_grasp"]
    with pytest.raises(ValueError, match="acp_grasp provided twice"):
        ports.merged(Ports(acp_grasp=b))  # type: ignore[arg-type]
    assert ports.without(b) is ports
    assert ports.without(a) == Ports()


# -- the coordinator fills and clears ports ----------------------------------------------------

class Journal:
    lines: list[str] = []


class Provider(Part):
    name = "provider"
    fail = False

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def ports(self) -> Ports:
        return Ports(acp_grasp=self)

    def asa_api(self) -> None:
        return None

    async def find_est_server(self) -> tuple[str, int] | None:
        return ("fd00::1", 443)

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError("broken")

    async def stop(self) -> None:
        Journal.lines.append(f"provider stops, port {self.ctx.acp_grasp is not None}, "
                             f"keep {self.keep_on_stop}")


class User(Part):
    """Uses the port if it is there, and degrades when it is not."""
    name = "user"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        port = self.ctx.acp_grasp
        found = await port.find_est_server() if port is not None else None
        Journal.lines.append(f"user found {found}")

    async def stop(self) -> None:
        Journal.lines.append(f"user stops, port {self.ctx.acp_grasp is not None}")


@pytest.fixture
def fake_parts(monkeypatch: pytest.MonkeyPatch) -> type[Provider]:
    module = types.ModuleType("acp_openwrt.fake_parts")
    module.Provider, module.User = Provider, User  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "acp_openwrt.fake_parts", module)
    monkeypatch.setattr(coordinator, "part_names",
                        lambda config, identity: ["fake_parts:Provider", "fake_parts:User"])
    monkeypatch.setattr(Provider, "fail", False)
    Journal.lines = []
    return Provider


def test_the_coordinator_fills_ports_when_building_and_clears_them_on_stop(
        fake_parts: type[Provider], tmp_path: Path) -> None:
    node = Node(AcpConfig(run_dir=tmp_path), None)

    async def scenario() -> None:
        await node._start_parts()
        assert isinstance(node.ctx.acp_grasp, Provider)
        await node._stop_parts(keep=True)
    asyncio.run(scenario())
    # stopped in reverse order; the provider's port is gone before it stops
    assert Journal.lines == ["user found ('fd00::1', 443)", "user stops, port True",
                             "provider stops, port False, keep True"]
    assert node.ctx.ports == Ports() and node.ctx.acp_grasp is None


def test_a_provider_that_fails_to_start_leaves_no_port(fake_parts: type[Provider],
                                                       tmp_path: Path) -> None:
    fake_parts.fail = True
    node = Node(AcpConfig(run_dir=tmp_path), None)

    async def scenario() -> None:
        await node._start_parts()
        assert node.ctx.acp_grasp is None
        assert [s.name for s in node.services] == ["user"]
        await node._stop_parts(keep=False)
    asyncio.run(scenario())
    assert Journal.lines == ["provider stops, port False, keep False", "user found None",
                             "user stops, port False"]
    assert "provider" not in node.failed  # cleared with the parts

"""Part.prepare(): every built part's slow independent work begins before the first start
(charon's start overlaps the earlier parts'), and a build cancelled mid-way (acpd stopping
during a rebuild) undoes what it began instead of leaving it running."""
from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path

import pytest

from acp_openwrt import coordinator
from acp_openwrt.config import AcpConfig
from acp_openwrt.coordinator import Node
from acp_openwrt.node_context import NodeContext, Part

pytestmark = pytest.mark.unit

JOURNAL: list[str] = []


class Slow(Part):
    """Starts slowly (as the links part might on a busy box)."""
    name = "slow"
    gate: asyncio.Event | None = None

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        JOURNAL.append("slow starts")
        assert Slow.gate is not None
        await Slow.gate.wait()

    async def stop(self) -> None:
        JOURNAL.append(f"slow stops, keep {self.keep_on_stop}")


class Daemon(Part):
    """Spawns its daemon in prepare(), as the channels part spawns charon."""
    name = "daemon"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.spawn: asyncio.Task[None] | None = None

    def prepare(self) -> None:
        JOURNAL.append("daemon prepares")
        self.spawn = asyncio.get_running_loop().create_task(asyncio.sleep(3600))

    async def start(self) -> None:
        JOURNAL.append("daemon starts")

    async def stop(self) -> None:
        if self.spawn is not None:
            self.spawn.cancel()
        JOURNAL.append(f"daemon stops, keep {self.keep_on_stop}")


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("acp_openwrt.prepare_parts")
    module.Slow, module.Daemon = Slow, Daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "acp_openwrt.prepare_parts", module)
    monkeypatch.setattr(coordinator, "part_names",
                        lambda config, identity: ["prepare_parts:Slow", "prepare_parts:Daemon"])
    JOURNAL.clear()


def test_prepare_runs_before_the_first_start(parts: None, tmp_path: Path) -> None:
    node = Node(AcpConfig(run_dir=tmp_path), None)

    async def scenario() -> None:
        Slow.gate = asyncio.Event()
        Slow.gate.set()
        await node._start_parts()
        await node._stop_parts(keep=False)
    asyncio.run(scenario())
    assert JOURNAL == ["daemon prepares", "slow starts", "daemon starts",
                       "daemon stops, keep False", "slow stops, keep False"]


def test_a_cancelled_build_stops_what_it_prepared(parts: None, tmp_path: Path) -> None:
    node = Node(AcpConfig(run_dir=tmp_path), None)

    async def scenario() -> None:
        Slow.gate = asyncio.Event()  # never set: the build hangs in slow's start
        build = asyncio.get_running_loop().create_task(node._start_parts())
        await asyncio.sleep(0.01)
        build.cancel()
        with pytest.raises(asyncio.CancelledError):
            await build
    asyncio.run(scenario())
    # the part cancelled mid-start and the one never started are both stopped, keeping
    # what a next build adopts
    assert JOURNAL == ["daemon prepares", "slow starts", "slow stops, keep True",
                       "daemon stops, keep True"]
    assert node.services == []

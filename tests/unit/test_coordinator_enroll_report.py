"""The enrolment's enrollstatus report and acpd's restart (issue 19): the coordinator sends the
report handed over with IdentityChanged from a detached copy of itself made after the parts
stopped and before the exec (not on the way to it); in line before the exec if no copy can be
made; as a task of its own when it rebuilds in place (no exec)."""
from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path

import pytest

from acp_openwrt import coordinator
from acp_openwrt.config import AcpConfig
from acp_openwrt.coordinator import Node
from acp_openwrt.events import IdentityChanged
from acp_openwrt.lab.pki import TestCA
from acp_openwrt.node_context import NodeContext, Part

pytestmark = pytest.mark.unit

JOURNAL: list[str] = []


class Quiet(Part):
    name = "quiet"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        JOURNAL.append("parts start")

    async def stop(self) -> None:
        JOURNAL.append("parts stop")


class Report:
    def __init__(self, detaches: bool) -> None:
        self.detaches = detaches

    def send_detached(self) -> bool:
        JOURNAL.append(f"detach {'made' if self.detaches else 'failed'}")
        return self.detaches

    async def send(self) -> bool:
        await asyncio.sleep(0)
        JOURNAL.append("sent here")
        return True


@pytest.fixture
def node_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> IdentityChanged:
    module = types.ModuleType("acp_openwrt.report_parts")
    module.Quiet = Quiet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "acp_openwrt.report_parts", module)
    monkeypatch.setattr(coordinator, "part_names", lambda config, identity: ["report_parts:Quiet"])
    JOURNAL.clear()
    ca = TestCA.create(tmp_path / "ca")
    node = ca.issue_node("n2", acp_node_name="fd89b714f3db00000200000064000000@acp.example.com")
    return IdentityChanged(str(node.cert_path), str(node.key_path), str(ca.cert_path))


def _enrol(tmp_path: Path, event: IdentityChanged, reexec: object) -> Node:
    node = Node(AcpConfig(run_dir=tmp_path / "run"), None, reexec=reexec)  # type: ignore[arg-type]

    async def scenario() -> None:
        await node.ctx.control.start()
        await node._start_parts()
        node.ctx.bus.publish(event)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if JOURNAL.count("parts start") == 2 and (
                    "sent here" in JOURNAL or "detach made" in JOURNAL):
                break
        await node.stop()
    asyncio.run(scenario())
    return node


def _exec_fails() -> None:
    JOURNAL.append("exec")
    raise OSError(8, "Exec format error")  # so that the test goes on in this process


@pytest.mark.parametrize("detaches", [True, False])
def test_report_leaves_after_the_parts_stop_and_before_the_exec(
        node_files: IdentityChanged, tmp_path: Path, detaches: bool) -> None:
    event = IdentityChanged(node_files.cert_path, node_files.key_path,
                            node_files.trust_anchors_path, report=Report(detaches))
    _enrol(tmp_path, event, _exec_fails)
    before_exec = JOURNAL[:JOURNAL.index("exec")]
    if detaches:
        assert before_exec == ["parts start", "parts stop", "detach made"]
        assert "sent here" not in JOURNAL  # the copy sends it, not this process
    else:
        assert before_exec == ["parts start", "parts stop", "detach failed", "sent here"]


def test_report_is_a_task_when_the_parts_are_rebuilt_in_place(
        node_files: IdentityChanged, tmp_path: Path) -> None:
    event = IdentityChanged(node_files.cert_path, node_files.key_path,
                            node_files.trust_anchors_path, report=Report(True))
    _enrol(tmp_path, event, None)
    assert "sent here" in JOURNAL and not any(e.startswith("detach") for e in JOURNAL)
    assert JOURNAL.count("parts start") == 2  # rebuilt with the new identity

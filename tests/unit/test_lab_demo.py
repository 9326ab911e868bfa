"""The demo's plumbing without root or a guest: arguments, the host/guest split, steps and their
summary, teardown on failure and Ctrl-C, and the formation watcher's lines from status replies."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from acp_openwrt.lab import demo
from acp_openwrt.lab.demo_watch import FormationWatch
from acp_openwrt.lab.vm import GuestResult, GuestUnavailable


def as_root(monkeypatch: pytest.MonkeyPatch, in_guest: bool = False) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    if in_guest:
        monkeypatch.setenv("ACP_LAB_GUEST", "1")
    else:
        monkeypatch.delenv("ACP_LAB_GUEST", raising=False)


def test_without_root_says_so_in_one_line_and_exits_2(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("ran without root"))
    monkeypatch.setattr(demo, "run_on_guest", lambda *a, **k: pytest.fail("booted without root"))
    assert demo.main([]) == demo.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "must run as root" in err
    assert demo.main(["--fast"]) == demo.EXIT_USAGE
    assert "takes no arguments but --in-guest" in capsys.readouterr().err


def test_host_boots_the_guest_and_the_guest_runs_the_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: ran.append("nodes") or 0)
    monkeypatch.setattr(demo, "run_on_guest", lambda *a, **k: ran.append("guest") or 7)
    as_root(monkeypatch)
    assert demo.main([]) == 7 and ran == ["guest"]
    assert demo.main(["--in-guest"]) == 0 and ran == ["guest", "nodes"]
    as_root(monkeypatch, in_guest=True)  # `acp-lab vm -- python3 -m acp_openwrt.lab.demo`
    assert demo.main([]) == 0 and ran == ["guest", "nodes", "nodes"]


def test_run_on_guest_reruns_itself_streams_and_exits_with_the_guests_status(
        capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run_in_guest(argv: list[str], *, timeout: float, on_output: Any) -> GuestResult:
        calls.append(list(argv))
        on_output(b"ACP demo: from the guest\n")
        return GuestResult(status=1, boot_seconds=9.0, total_seconds=99.0)

    monkeypatch.setattr("acp_openwrt.lab.vm.run_in_guest", fake_run_in_guest)
    said: list[str] = []
    assert demo.run_on_guest(say=said.append) == 1
    assert calls[0][-3:] == ["-m", "acp_openwrt.lab.demo", "--in-guest"]
    assert "no ESP" in said[0] and "QEMU guest" in said[0]
    assert capsysbinary.readouterr().out == b"ACP demo: from the guest\n"
    assert said[-1].endswith("exit status 1")


@pytest.mark.parametrize(("error", "status"), [(GuestUnavailable("no qemu"), 2),
                                               (KeyboardInterrupt(), 130)])
def test_run_on_guest_without_a_guest_or_on_ctrl_c(
        monkeypatch: pytest.MonkeyPatch, error: BaseException, status: int) -> None:
    def fail(*_a: Any, **_k: Any) -> GuestResult:
        raise error

    monkeypatch.setattr("acp_openwrt.lab.vm.run_in_guest", fail)
    said: list[str] = []
    assert demo.run_on_guest(say=said.append) == status
    assert len(said) == 2


def run_with(steps: list[demo.Step]) -> tuple[int, list[str]]:
    said: list[str] = []
    return demo.run_demo(steps, say=said.append), said


def test_a_failed_step_stops_the_rest_tears_down_and_exits_1() -> None:
    seen: list[Path] = []

    def ok(state: demo.Demo) -> str:
        seen.append(state.workdir)
        state.mark("first acpd started")
        return "fine"

    def broken(_state: demo.Demo) -> str:
        raise demo.StepFailed("c not enrolled")

    steps = [demo.Step("one", ok), demo.Step("two", broken), demo.Step("three", ok)]
    status, said = run_with(steps)
    assert status == demo.EXIT_FAILED and len(seen) == 1
    assert "    FAILED: c not enrolled" in said and "  skip  three" in said
    assert "teardown: everything removed" in said and not seen[0].exists()
    assert said[-1] == "demo FAILED: 1/3 steps"
    assert not any("time to full ACP" in line for line in said)  # it never formed


def test_ctrl_c_tears_down_and_exits_130() -> None:
    def interrupt(_state: demo.Demo) -> str:
        raise KeyboardInterrupt

    status, said = run_with([demo.Step("Ctrl-C", interrupt)])
    assert status == 130 and said[-2:] == ["interrupted", "teardown: everything removed"]


def test_summary_names_the_time_to_full_acp_and_memory(tmp_path: Path) -> None:
    said: list[str] = []
    state = demo.Demo(tmp_path, demo.demo_spec(), said.append)
    state.marks = {"first acpd started": 1.0, "pledges started": 8.0, "full ACP": 91.5}
    state.memory = {"r": {"acpd": 65536, "join_proxy": 20480, "charon": 8192}}
    outcome = demo.Outcome("only", True, "ok", 0.1)
    assert demo.summary(state, [outcome], [demo.Step("only", lambda _d: "")])
    assert any("90.5 s from the first acpd start, 83.5 s after the pledges started" in line
               for line in said)
    assert said[-2].split() == ["r", "64.0", "MB", "20.0", "MB", "8.0", "MB"]
    assert said[-1] == "demo passed: the ACP formed: 1/1 steps"


def test_demo_spec_is_the_line_r_a_b_c() -> None:
    spec = demo.demo_spec()
    assert [n.name for n in spec.nodes] == ["r", "a", "b", "c"]
    assert [(link.a.node, link.b.node) for link in spec.links] == [("r", "a"), ("a", "b"),
                                                                    ("b", "c")]


class FakeLab:
    """Answers `status` from a dict per node; a missing node is 'not answering'."""

    def __init__(self) -> None:
        self.topology = SimpleNamespace(links=[1, 2])
        self.replies: dict[str, dict[str, Any]] = {}

    def ask(self, name: str, cmd: str) -> dict[str, Any]:
        assert cmd == "status"
        return self.replies[name]


def reply(n: int | None, channels: list[tuple[str, str]] = (), rank: int | None = None,
          parent_if: str | None = None) -> dict[str, Any]:
    identity = None if n is None else {"acp_address": f"fd00::{n}", "acp_node_name": f"node{n}"}
    return {"identity": identity,
            "channels": {"channels": [{"state": "up", "interface": ifc, "peer_node_name": peer,
                                       "peer": "fe80::1", "role": "decider"}
                                      for ifc, peer in channels]},
            "rpl": {"rank": rank, "parents": [{"preferred": True, "ifname": parent_if,
                                               "address": "fe80::1"}] if parent_if else []}}


def test_formation_watch_reports_each_fact_once_and_knows_when_it_formed() -> None:
    lab, lines = FakeLab(), []
    watch = FormationWatch(lab, ["r", "a", "b"], "r", lines.append)  # type: ignore[arg-type]
    lab.replies = {"r": reply(1, rank=256), "a": reply(None)}
    assert not watch.poll()
    assert lines == ["RPL: r is the DODAG root, rank 256",
                     "a: acpd up, no LDevID: a BRSKI pledge, looking for a join proxy"]
    lab.replies["a"] = reply(2, [("acp_1", "node1")], rank=1024, parent_if="acp_1")
    lab.replies["b"] = reply(3)
    assert not watch.poll() and "1 of 2 channels up" in watch.missing()
    assert lines[2:] == ["a enrolled through BRSKI: ACP address fd00::2",
                         "secure channel a - r up (acp_1, decider on a)",
                         "RPL: a joined the DODAG: rank 1024, parent r (via acp_1)",
                         "b enrolled through BRSKI: ACP address fd00::3"]
    lab.replies["b"] = reply(3, [("acp_2", "node2")], rank=1792, parent_if="acp_2")
    assert watch.poll()
    assert watch.poll() and len(lines) == 8  # nothing is said twice
    assert lines[-2:] == ["secure channel b - a up (acp_2, decider on b)",
                          "RPL: b joined the DODAG: rank 1792, parent a (via acp_2)"]

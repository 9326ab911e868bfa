"""The demo's teardown on this host's kernel: after its first step built the nodes (and an acpd
made its namespaces), a failed step or Ctrl-C still leaves no namespace and no temp dir."""
from __future__ import annotations

from acp_openwrt import netns
from acp_openwrt.lab import demo


def leaves_nothing(last: demo.Step) -> tuple[int, list[str]]:
    made: dict[str, object] = {}

    def as_acpd_would(state: demo.Demo) -> str:
        assert state.lab is not None and state.lab.topology is not None
        made.update(prefix=state.lab.topology.prefix, workdir=state.workdir)
        netns.create_namespace(state.lab.nodes["r"].dull_ns)
        return "r's DULL namespace made"

    said: list[str] = []
    status = demo.run_demo([demo.STEPS[0], demo.Step("acpd-like", as_acpd_would), last],
                           say=said.append)
    prefix = made["prefix"]
    assert not [n for n in netns.list_namespaces() if n.startswith(f"{prefix}-")]
    assert not made["workdir"].exists()  # type: ignore[attr-defined]
    assert "teardown: everything removed" in said
    return status, said


def test_failed_step_tears_everything_down() -> None:
    def fail(_state: demo.Demo) -> str:
        raise demo.StepFailed("on purpose")

    status, said = leaves_nothing(demo.Step("fails", fail))
    assert status == demo.EXIT_FAILED and said[-1] == "demo FAILED: 2/3 steps"


def test_ctrl_c_tears_everything_down() -> None:
    def interrupt(_state: demo.Demo) -> str:
        raise KeyboardInterrupt

    status, said = leaves_nothing(demo.Step("Ctrl-C", interrupt))
    assert status == 130


def test_the_first_step_builds_the_named_line() -> None:
    seen: list[str] = []

    def look(state: demo.Demo) -> str:
        assert state.lab is not None and state.lab.topology is not None
        seen.extend(state.lab.topology[name].netns for name in demo.NODES)
        return "looked"

    status = demo.run_demo([demo.STEPS[0], demo.Step("look", look)], say=lambda _l: None)
    assert status == 0 and [ns.rsplit("-", 1)[1] for ns in seen] == ["r", "a", "b", "c"]
    assert not set(seen) & set(netns.list_namespaces())

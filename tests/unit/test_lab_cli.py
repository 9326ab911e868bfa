"""acp-lab's command line without root: argument errors, `topo list` data, the SIGTERM handler."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.lab import cli
from acp_openwrt.lab.cli import EXIT_USAGE, MAX_NODES, main, topologies


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv, message", [
    (["up", "torus", "3"], "unknown topology 'torus' (one of line, ring, star, mesh, segment)"),
    (["up", "line", "three"], "N must be a whole number of nodes, not 'three'"),
    (["up", "line", "0"], f"N must be 1 to {MAX_NODES}, not 0"),
    (["up", "mesh", str(MAX_NODES + 1)], f"N must be 1 to {MAX_NODES}, not {MAX_NODES + 1}"),
    (["up", "ring", "2"], "need at least 3 nodes, got 2"),
    (["up", "line", "2", "--prefix", "Bad"], "prefix 'Bad' is invalid"),
    (["up", "line", "2", "--prefix", "a-b"], "prefix 'a-b' is invalid"),
    (["up", "line", "2", "--prefix", "waytoolongprefix"], "prefix 'waytoolongprefix' is invalid"),
    (["down", "--prefix", "x/y"], "prefix 'x/y' is invalid"),
    (["down", "--prefix", ""], "prefix '' is invalid"),
])
def test_bad_arguments_give_one_line_and_exit_2_before_touching_anything(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        argv: list[str], message: str) -> None:
    def no_system(*_: Any, **__: Any) -> Any:
        raise AssertionError("touched namespaces despite bad arguments")

    monkeypatch.setattr("acp_openwrt.netns.list_namespaces", no_system)
    monkeypatch.setattr("acp_openwrt.netns.cleanup_stale", no_system)
    monkeypatch.setattr("acp_openwrt.netns.create_namespace", no_system)
    status, out, err = run(capsys, "topo", "--state-dir", str(tmp_path), *argv)
    assert status == EXIT_USAGE
    assert out == ""
    assert err.startswith(f"acp-lab topo {argv[0]}: {message}")
    assert err.endswith("\n") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["up", "line", "2"], ["down", "--prefix", "lab1"]])
def test_without_root_topo_refuses_in_one_line(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               argv: list[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    status, out, err = run(capsys, "topo", "--state-dir", str(tmp_path), *argv)
    assert (status, out) == (EXIT_USAGE, "")
    assert err == (f"acp-lab topo {argv[0]}: needs root "
                   "(it creates and removes network namespaces)\n")


def test_down_needs_a_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["topo", "down"])
    assert info.value.code == 2
    assert "--prefix" in capsys.readouterr().err


def test_up_in_use_prefix_is_refused(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("acp_openwrt.netns.list_namespaces", lambda: ["busy1-n1", "busy10-n1"])
    status, _, err = run(capsys, "topo", "--state-dir", str(tmp_path), "up", "line", "2",
                         "--prefix", "busy1")
    assert status == EXIT_USAGE
    assert err == ("acp-lab topo up: prefix busy1 is in use (1 namespaces); "
                   "free it with: acp-lab topo down --prefix busy1\n")


def write_record(state_dir: Path, prefix: str, kind: str, nodes: list[str]) -> None:
    state_dir.mkdir(exist_ok=True)
    record = {"prefix": prefix, "kind": kind, "n": len(nodes),
              "nodes": [{"name": n, "namespace": f"{prefix}-{n}"} for n in nodes]}
    (state_dir / f"{prefix}.json").write_text(json.dumps(record))


def test_topologies_joins_records_with_namespaces(tmp_path: Path) -> None:
    write_record(tmp_path, "demo", "line", ["n1", "n2"])
    write_record(tmp_path, "half", "ring", ["n1", "n2", "n3"])
    (tmp_path / "junk.json").write_text("{not json")
    found = topologies(tmp_path, ["demo-n1", "demo-n2", "demo-n1-dull", "half-n1",
                                  "lab0a1b2c-n1", "lab0a1b2c-sw", "acp-dull", "other"])
    assert found == [
        {"prefix": "demo", "kind": "line", "n": 2, "namespaces": 3, "state": "up"},
        {"prefix": "half", "kind": "ring", "n": 3, "namespaces": 1, "state": "broken"},
        {"prefix": "lab0a1b2c", "kind": None, "n": None, "namespaces": 2, "state": "unrecorded"},
    ]
    assert topologies(tmp_path / "missing", []) == []


def test_topo_list_json_and_table(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_record(tmp_path, "demo", "star", ["n1", "n2"])
    monkeypatch.setattr("acp_openwrt.netns.list_namespaces", lambda: ["demo-n1", "demo-n2"])
    status, out, _ = run(capsys, "topo", "--state-dir", str(tmp_path), "list", "--json")
    assert status == 0 and json.loads(out)[0]["state"] == "up"
    status, out, _ = run(capsys, "topo", "--state-dir", str(tmp_path), "list")
    lines = out.splitlines()
    assert lines[0].split() == ["PREFIX", "KIND", "N", "NAMESPACES", "STATE"]
    assert lines[1].split() == ["demo", "star", "2", "2", "up"]


def test_main_restores_the_callers_sigterm_handler(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def spy(args: Any) -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        return 7

    monkeypatch.setattr(cli, "_vm", spy)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        for mine in (signal.SIG_IGN, signal.SIG_DFL, lambda *_: None):
            signal.signal(signal.SIGTERM, mine)
            assert main(["vm", "--", "true"]) == 7
            assert seen[-1] is cli._terminate  # while running, SIGTERM unwinds through finally
            assert signal.getsignal(signal.SIGTERM) is mine
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert main(["topo", "up", "torus", "3"]) == EXIT_USAGE  # an error path restores too
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    capsys.readouterr()


def test_sigterm_during_a_subcommand_exits_143_and_restores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def terminated(args: Any) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.01)  # give the handler a bytecode boundary
        return 0

    monkeypatch.setattr(cli, "_vm", terminated)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with pytest.raises(SystemExit) as info:
            main(["vm", "--", "true"])
        assert info.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)

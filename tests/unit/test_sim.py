"""acp-lab sim (issue 20): the discrete-event ACP on the real cores is deterministic, forms the
full ACP on small topologies, survives loss, and its command line writes its figures."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from acp_openwrt.lab import cli
from acp_openwrt.lab.sim.net import Model
from acp_openwrt.lab.sim.run import simulate
from acp_openwrt.lab.sim.topology import KINDS, build


def _figures(result: dict) -> dict:
    # "run" is the host's (wall time, RSS); the memory walk is compared across processes below
    # (a first run in a process fills module-level caches that later runs' walks then reach)
    return {k: v for k, v in result.items() if k not in ("run", "memory")}


def test_same_seed_same_figures_other_seed_other_run():
    a = simulate("mesh", 12, 3, steady_s=120)
    b = simulate("mesh", 12, 3, steady_s=120)
    assert json.dumps(_figures(a), sort_keys=True) == json.dumps(_figures(b), sort_keys=True)
    c = simulate("mesh", 12, 4, steady_s=120)
    assert _figures(c) != _figures(a)


def test_same_seed_same_json_across_processes_and_hash_seeds(tmp_path):
    texts = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}.json"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-m", "acp_openwrt.lab.cli", "sim", "--nodes", "12",
                        "--topology", "mesh", "--seed", "3", "--steady", "120", "--json",
                        str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        del result["run"]
        texts.append(json.dumps(result, sort_keys=True))
    assert texts[0] == texts[1]


@pytest.mark.parametrize("kind", ["campus", "rings", "mesh"])
def test_small_topology_forms_the_full_acp(kind):
    r = simulate(kind, 14, 1, steady_s=120, memory=False)
    assert r["formed"], r["cold_start"]
    assert r["cold_start"]["registrar_enrolments"] == 13
    assert r["routes"]["root"] == 13          # the root routes to every other node
    assert r["steady"]["full_acp_at_end"]     # and it stays formed
    assert r["run"]["timer_spins"] == 0
    assert r["steady"]["by_kind_per_node_per_min"]["rpl_dio"] > 0


def test_line_enrols_hop_by_hop():
    r = simulate("line", 4, 1, steady_s=60)
    at = r["cold_start"]["enrolled_at_s"]
    assert at["1"] < at["2"] < at["3"]
    assert r["routes"] == {"root": 3, "median": 2, "max_non_root": 3, "rpl_depth_median": 2,
                           "rpl_depth_max": 3}
    assert r["memory"]["median_node_bytes"] > 0


def test_loss_is_survived():
    r = simulate("line", 5, 2, Model(loss=0.2), steady_s=120, limit_s=1800, memory=False)
    assert r["formed"]
    assert r["cold_start"]["by_kind"]["lost"] > 0
    assert r["steady"]["full_acp_at_end"]


def test_enrolled_nodes_form_in_seconds():
    r = simulate("campus", 20, 1, Model(enrolled_at_start=True), steady_s=60, memory=False)
    assert r["formed"] and r["cold_start"]["formation_s"] < 10
    assert r["cold_start"]["registrar_enrolments"] == 0


def test_repeat_with_loop_count_one_stops_the_cold_start_flood_storm():
    """grasp/part.py repeats at loop count 1 (the default); the cached loop count (None, what
    it did before) made every new channel a network-wide flood."""
    storm = simulate("campus", 30, 1, Model(repeat_loop_count=None), steady_s=60,
                     memory=False)["cold_start"]["by_kind"]
    fixed = simulate("campus", 30, 1, steady_s=60, memory=False)
    assert fixed["formed"]
    assert fixed["cold_start"]["by_kind"]["grasp_flood"] * 3 < storm["grasp_flood"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "lab-mesh10"])
def test_topologies_are_connected_with_redundancy(kind):
    topo = build(kind, 60, random.Random(1))
    assert topo.depth() >= 1
    degrees = [len(n) for n in topo.neighbours()]
    if kind in ("campus", "rings"):
        assert min(degrees) >= 2   # redundant uplinks / rings: no single point of attachment
    assert len(build("lab-mesh10", 10, random.Random(1)).edges) == 12


def test_command_line_writes_json(tmp_path, capsys):
    out = tmp_path / "sim.json"
    status = cli.main(["sim", "--nodes", "6", "--topology", "rings", "--seed", "5",
                       "--steady", "60", "--json", str(out)])
    assert status == 0
    written = json.loads(out.read_text())
    assert written["nodes"] == 6 and written["formed"]
    assert json.loads(capsys.readouterr().out) == written

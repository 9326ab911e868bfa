"""The ACP map over real secure channels in the guest: four enrolled acpd nodes in a line
n1 (DODAG root) - n2 - n3 - n4. Once the channels are up and RPL has routes, `map` asked at the
root and at the far end draws every node reached, the three channels confirmed by both ends and
each node's RPL parent, gathered by GRASP synchronization over the ACP; `acpctl map` prints it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acp_openwrt.control import api
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.topology import line

NAMES = ("n1", "n2", "n3", "n4")


@pytest.fixture
def lab(tmp_path: Path):
    if os.environ.get("ACP_LAB_GUEST") != "1":
        pytest.skip("needs the guest kernel: run through pytest's acp-lab plugin or `acp-lab vm`")
    lab = AcpdLab(line(4), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


def full_map(lab: AcpdLab, name: str) -> dict | None:
    answer = lab.ask(name, "map")
    if all(n["reached"] for n in answer["nodes"]) and len(answer["nodes"]) == 4 \
            and len(answer["parents"]) == 3:
        return answer  # type: ignore[no-any-return]
    return None


def test_the_map_of_a_four_node_line(lab: AcpdLab) -> None:
    lab.enrol("n1", "option dodag_root '1'")
    for name in NAMES[1:]:
        lab.enrol(name)
    lab.start_all()
    try:
        lab.wait("channels up along the line",
                 lambda: [lab.channels_up(n) for n in NAMES] == [1, 2, 2, 1], timeout=90)
        lab.wait("n4 reaches n1", lambda: lab.ping("n4", "n1") == 1, timeout=30)
        address = {n: lab.acp_address(n) for n in NAMES}
        for origin in ("n1", "n4"):
            waited = time.monotonic()
            lab.wait(f"a full map from {origin}", lambda o=origin: full_map(lab, o), timeout=60)
            answer = full_map(lab, origin)
            assert answer is not None
            print(f"map from {origin}: full after {time.monotonic() - waited:.1f} s, "
                  f"gathered in {answer['duration_s']} s")
            assert api.problems(answer, api.MapAnswer) == []
            assert answer["origin"] == address[origin] and answer["complete"] is True
            nodes = {n["address"]: n for n in answer["nodes"]}
            assert set(nodes) == set(address.values())
            assert nodes[address["n1"]]["state"] == "root"
            assert "root" in nodes[address["n1"]]["roles"]
            assert all(nodes[address[n]]["state"] == "attached" for n in NAMES[1:])
            assert {(c["a"], c["b"], c["confirmed"]) for c in answer["channels"]} == {
                (*sorted((address[a], address[b]), key=_key), True)
                for a, b in (("n1", "n2"), ("n2", "n3"), ("n3", "n4"))}
            assert {(p["child"], p["parent"]) for p in answer["parents"]} == {
                (address["n2"], address["n1"]), (address["n3"], address["n2"]),
                (address["n4"], address["n3"])}
            # from the root every node is a seed (its DAO routes); from the leaf, hop by hop
            hops = {n: nodes[address[n]]["hops"] for n in NAMES}
            print(f"hops from {origin}: {hops}")
            assert hops[origin] == 0 and all(hops[n] >= 1 for n in NAMES if n != origin)
            if origin == "n1":
                assert all(hops[n] == 1 for n in NAMES[1:])
        text = subprocess.run([sys.executable, "-m", "acp_openwrt.acpctl", "--socket",
                               str(lab.nodes["n1"].socket), "map"],
                              capture_output=True, text=True, timeout=30)
        assert text.returncode == 0, text.stderr
        print(text.stdout)
        assert "4 nodes (4 answered), 3 channels" in text.stdout
        assert "RPL (preferred parents):" in text.stdout
    except BaseException:
        print(lab.logs())
        raise


def _key(address: str) -> int:
    import ipaddress
    return int(ipaddress.IPv6Address(address))

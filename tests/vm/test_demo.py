"""`make demo`'s guest half, run once: four real acpd nodes r - a - b - c, three of them with
only an IDevID, form the ACP; the demo says so line by line, exits 0 and leaves nothing."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from acp_openwrt.lab.acpd_lab import process_role
from acp_openwrt.netns import list_namespaces


def test_demo_forms_the_acp_and_leaves_nothing() -> None:
    if os.environ.get("ACP_LAB_GUEST") != "1":
        pytest.skip("needs the guest kernel: run through pytest's acp-lab plugin or `acp-lab vm`")
    run = subprocess.run([sys.executable, "-m", "acp_openwrt.lab.demo", "--in-guest"],
                         capture_output=True, text=True, timeout=300)
    out = run.stdout
    print(out)
    assert run.returncode == 0, out + run.stderr
    lines = out.splitlines()
    assert lines[-1] == "demo passed: the ACP formed: 8/8 steps"
    for name in ("a", "b", "c"):
        assert any(re.search(rf"s  {name} enrolled through BRSKI: ACP address fd", line)
                   for line in lines)
        assert any(re.search(rf"s  RPL: {name} joined the DODAG: rank \d+, parent [rab] ", line)
                   for line in lines)
    for pair in ("r - a", "a - b", "b - c"):
        assert any(f"secure channel {pair} up" in line or f"secure channel {pair[::-1]} up" in line
                   for line in lines), pair
    assert "all 12 ordered pairs of nodes reach each other's ACP addresses" in out
    assert sum(line.startswith("    --- ") and line.endswith(" status") for line in lines) == 4
    assert len(re.findall(r"^    rpl +member, rank \d+, parent fe80:", out, re.M)) == 3
    assert len(re.findall(r"^    echo \d: fd\S+ -> fd\S+: [\d.]+ ms$", out, re.M)) >= 1
    assert re.search(r"time to full ACP .*: [\d.]+ s from the first acpd start", out)
    assert len(re.findall(r"^    [rabc] +[\d.]+ MB +[\d.]+ MB +[\d.]+ MB$", out, re.M)) == 4
    assert "teardown: everything removed" in lines
    prefix = re.search(r"namespaces (lab[0-9a-f]{6})-\{r,a,b,c\}", out)
    assert prefix is not None
    assert not [n for n in list_namespaces() if n.startswith(prefix.group(1) + "-")]
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and process_role(int(pid))]
    assert left == [], "acpd, join proxy or charon still running"
    workdir = re.search(r"acpctl --socket (/\S+)/r/run/acpd\.sock status", out)
    assert workdir is not None and not os.path.exists(workdir.group(1))

"""`reload` (ubus call acp reload): acpd reads its config file again and restarts its parts
with it; a broken file changes nothing and the reply names the bad line."""
from __future__ import annotations

import pytest

from acp_openwrt.control.client import ControlClientError
from acp_openwrt.lab.acpd_lab import AcpdLab


def test_reload_applies_a_changed_file_and_refuses_a_broken_one(lab: AcpdLab) -> None:
    lab.enrol("n1")
    lab.start_all(["n1"])
    node = lab.nodes["n1"]
    assert lab.ask("n1", "reload") == {"reloaded": False, "reason": "configuration unchanged"}
    lab.wait("n1 up with its link adopted", lambda: "ubus" in lab.ask("n1", "status")["parts"]
             and lab.ask("n1", "interfaces"), timeout=20)
    assert lab.ask("n1", "rpl")["role"] != "root"
    interfaces = [(e["dull_interface"], e["link_local"]) for e in lab.ask("n1", "interfaces")]

    config = node.workdir / "acp.conf"
    good = config.read_text()
    config.write_text(good + "\toption dodag_root '1'\n")
    assert lab.ask("n1", "reload") == {"reloaded": True}
    lab.wait("n1 is the DODAG root", lambda: lab.ask("n1", "rpl")["role"] == "root", timeout=10)
    status = lab.ask("n1", "status")
    assert status["rebuilds"] == 1 and status["failed_parts"] == {}
    # links stay adopted across the restart of the parts: same twins, no duplicates
    lab.wait("links reported again", lambda: lab.ask("n1", "interfaces"), timeout=10)
    assert [(e["dull_interface"], e["link_local"])
            for e in lab.ask("n1", "interfaces")] == interfaces

    config.write_text(good + "\toption log_level 'verbose'\n")
    with pytest.raises(ControlClientError, match=r"not reloaded: .*acp.conf:\d+: option log_level"):
        lab.ask("n1", "reload")
    assert lab.ask("n1", "rpl")["role"] == "root" and lab.ask("n1", "status")["rebuilds"] == 1

"""Every control command against live acpd processes, each answer checked against its type in
acp_openwrt.control.api (docs/control-api.md): keys present, no undocumented key, value types.

Three nodes in a line: n1 the registrar (with an ACP connect section), n2 enrolled (an LDevID
from the lab CA: its pledge part renews), n3 a pledge with only an IDevID, so that each part's
answer is seen in the states a netns host can reach (no kernel IPsec here: channels stay below
"up"). The JSON error answers
(unknown command, malformed line, busy) are checked on the raw socket.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.control import api
from acp_openwrt.control.server import MAX_CLIENTS
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.topology import line


@pytest.fixture
def lab(tmp_path: Path):
    lab = AcpdLab(line(3), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


def raw(path: Path, line: bytes) -> dict[str, Any]:
    """One line to the control socket, its one reply line decoded (no client library)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(line)
        return json.loads(sock.makefile("rb").readline())


# the parameters of commands that take some: `revoke` a serial no certificate has (a harmless
# revocation: the CRL lists it, nobody is cut off)
PARAMS: dict[str, dict[str, str]] = {"revoke": {"target": "1",
                                                "reason": "control API test: never issued"}}


def check_every_command(lab: AcpdLab, name: str, asked: set[str]) -> dict[str, Any]:
    """Ask node `name` every command it registered; every envelope and answer must conform."""
    path = lab.nodes[name].socket
    commands = raw(path, b'{"cmd": "help"}\n')["result"]
    assert set(commands) <= set(api.ANSWERS), f"undocumented: {set(commands) - set(api.ANSWERS)}"
    answers: dict[str, Any] = {}
    found: list[str] = []
    for cmd in commands:
        reply = raw(path, json.dumps({"cmd": cmd, **PARAMS.get(cmd, {})}).encode() + b"\n")
        assert api.problems(reply, api.OkReply, f"{name} {cmd}") == [], reply
        found += api.problems(reply["result"], api.ANSWERS[cmd], f"{name} {cmd}")
        answers[cmd] = reply["result"]
        asked.add(cmd)
    assert found == [], "\n".join(found)
    for part in answers["status"]["parts"]:  # every running part shows up in status, typed
        assert part in api.NodeStatus.__optional_keys__, f"{name}: part {part} undocumented"
        assert part in answers["status"]
    return answers


def test_every_command_answers_as_documented(lab: AcpdLab) -> None:
    asked: set[str] = set()
    lab.start_masa("n1")
    lab.make_registrar("n1", "config connect 'lab'", "option device 'conn0'",
                       "option prefix 'fd00:acc:1::/64'")
    lab.enrol("n2")
    lab.make_pledge("n3")
    try:
        lab.start_all(["n1", "n2"])
        lab.trust_registrar("n1")
        lab.start_all(["n3"])
        for name in ("n1", "n2", "n3"):
            lab.wait(f"{name}'s parts all started",
                     lambda name=name: "ubus" in lab.ask(name, "status")["parts"], timeout=30)
        lab.wait("n3's pledge running", lambda: lab.ask("n3", "brski")["state"] != "stopped",
                 timeout=10)
        n3 = check_every_command(lab, "n3", asked)  # pledging (or enrolled already)
        assert "brski" in n3["help"] and "registrar" not in n3["help"]
        lab.wait("n1 and n2 hear each other", lambda: lab.ask("n1", "neighbors")
                 and lab.ask("n2", "neighbors") and lab.ask("n1", "channels"), timeout=30)

        n1 = check_every_command(lab, "n1", asked)
        assert {"registrar", "connect", "rpl", "channels", "proxy"} <= set(n1["help"])
        assert n1["status"]["failed_parts"] == {}
        assert n1["reload"] == {"reloaded": False, "reason": "configuration unchanged"}
        assert [c["name"] for c in n1["connect"]["connects"]] == ["lab"]
        assert n1["neighbors"] and n1["channels"] and n1["interfaces"]
        n2 = check_every_command(lab, "n2", asked)  # enrolled: `enroll` renews (and fails)
        assert n2["status"]["enrolled"] and "renewed" in n2["enroll"]
        assert asked == set(api.ANSWERS), f"never asked: {set(api.ANSWERS) - asked}"

        path = lab.nodes["n1"].socket
        for line, error in ((b'{"cmd": "nonesuch"}\n', "unknown command 'nonesuch'"),
                            (b'{"cmd": "enroll"}\n', "unknown command 'enroll'"),
                            (b"not json\n", "request is not JSON"),
                            (b'["status"]\n', 'request must be an object with a string "cmd"'),
                            (b"[" * 40 + b"\n", "request nested too deep"),
                            (b"\xff\n", "request is not UTF-8")):
            reply = raw(path, line)
            assert api.problems(reply, api.ErrorReply) == [] and error in reply["error"], reply
        held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(MAX_CLIENTS)]
        try:
            for sock in held:
                sock.connect(str(path))
            reply = raw(path, b'{"cmd": "status"}\n')
            assert api.problems(reply, api.ErrorReply) == [] and reply["error"].startswith(
                f"busy: {MAX_CLIENTS} control clients connected"), reply
        finally:
            for sock in held:
                sock.close()
        lab.wait("a slot free again", lambda: lab.ask("n1", "status")["control"]["counters"]
                 ["busy"] >= 1, timeout=5)
    except BaseException:
        print(lab.logs())
        raise

"""luci-app-acp without LuCI: the JSON files rpcd and LuCI read, the view's ubus calls against
the ACL and the bridge's methods, `node --check`, and the view rendered in node with small
stand-ins for LuCI's globals (E, rpc, uci, poll, ...) from canned ubus answers."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from acp_openwrt.control.part import METHODS, OBJECT, to_reply

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "luci" / "luci-app-acp"
VIEW = APP / "htdocs" / "luci-static" / "resources" / "view" / "acp" / "status.js"
ACL = APP / "root" / "usr" / "share" / "rpcd" / "acl.d" / "luci-app-acp.json"
MENU = APP / "root" / "usr" / "share" / "luci" / "menu.d" / "luci-app-acp.json"
NODE = shutil.which("node")


def view_calls() -> set[str]:
    calls = re.findall(r"rpc\.declare\(\{\s*object:\s*'([^']+)',\s*method:\s*'([^']+)'",
                       VIEW.read_text())
    assert calls, "the view declares no rpc calls"
    assert {obj for obj, _ in calls} == {OBJECT}
    return {method for _, method in calls}


def test_acl_grants_what_the_view_reads_and_nothing_that_acts() -> None:
    acl = json.loads(ACL.read_text())
    assert set(acl) == {"luci-app-acp"}
    grant = acl["luci-app-acp"]
    assert grant["description"] and set(grant) <= {"description", "read", "write"}
    granted = set(grant["read"]["ubus"][OBJECT])
    assert view_calls() <= granted <= set(METHODS)
    assert not granted & {"rescan", "enroll", "reload"}  # read-only: these change the node
    assert grant["read"]["uci"] == ["acp"]
    # uci.load('acp') is ubus `uci get`; rpcd scopes it to the uci configs granted above
    assert grant["read"]["ubus"]["uci"] == ["get"]
    assert "write" not in grant


def test_menu_entry_points_at_the_view_under_status() -> None:
    menu = json.loads(MENU.read_text())
    assert list(menu) == ["admin/status/acp"]
    entry = menu["admin/status/acp"]
    assert entry["title"] and isinstance(entry["order"], int)
    assert entry["action"] == {"type": "view", "path": "acp/status"}
    assert (APP / "htdocs/luci-static/resources/view" / (entry["action"]["path"] + ".js")) == VIEW
    assert VIEW.is_file()
    assert entry["depends"]["acl"] == ["luci-app-acp"]


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_view_syntax() -> None:
    proc = subprocess.run([NODE, "--check", str(VIEW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# LuCI's loader turns the 'require x' lines into arguments of a function made from the file.
HARNESS = r"""
const fs = require('fs');
const answers = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
const polls = [];
function flat(node) {
  if (node == null) return '';
  if (Array.isArray(node)) return node.map(flat).join(' ');
  if (typeof node !== 'object') return String(node);
  return (node.children || []).map(flat).join(' ');
}
function E(tag, attrs, children) {
  if (Array.isArray(tag)) return { tag: 'fragment', children: attrs || [] };
  if (children === undefined && (typeof attrs !== 'object' || Array.isArray(attrs))) {
    children = attrs; attrs = {};
  }
  return { tag, attrs, children: Array.isArray(children) ? children : [children] };
}
String.prototype.format = function(...args) {
  return this.replace(/%[^a-z%]*[a-z]/g, () => String(args.shift()));
};
const L = { resolveDefault: (p, d) => p.catch(() => d) };
const rpc = { declare: (o) => () => {
  if (answers.reject) return Promise.reject(new Error(answers.reject));
  if (!(o.method in answers)) return Promise.reject(new Error('Object not found'));
  let r = answers[o.method];
  if (o.expect) { const k = Object.keys(o.expect)[0]; r = (r && k in r) ? r[k] : o.expect[k]; }
  return Promise.resolve(r);
} };
const uci = { load: () => Promise.resolve(), get: (c, s, o) => (answers.uci || {})[o] };
const poll = { add: (fn, interval) => polls.push([fn, interval]) };
const dom = { content: (node, children) => { node.children = children; } };
const view = { extend: (o) => o };
// acp/acpmap.js (drawn in a real browser by tests/openwrt/test_luci_acpmap_svg.py): its input
const acpmap = { render: (m) => E('svg', {}, (m.nodes || []).map((n) => 'node ' + n.address)) };
globalThis.cbi_update_table = (table, rows, empty) => {
  table.children = table.children.concat(
    rows.length ? rows.map((r) => E('tr', {}, r.map((c) => E('td', {}, c)))) : [empty]);
};
const _ = (s) => s;
const src = fs.readFileSync(process.argv[2], 'utf8');
const v = new Function('view', 'dom', 'poll', 'rpc', 'uci', 'acpmap', 'L', 'E', '_', src)(
  view, dom, poll, rpc, uci, acpmap, L, E, _);
(async () => {
  const page = v.render(await v.load());
  await polls[0][0]();
  console.log(JSON.stringify({ text: flat(page), polls: polls.map((p) => p[1]) }));
})().catch((e) => { console.error(e.stack); process.exit(1); });
"""


def render(tmp_path: Path, answers: dict) -> dict:
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    data = tmp_path / "answers.json"
    data.write_text(json.dumps(answers))
    proc = subprocess.run([NODE, str(harness), str(VIEW), str(data)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_view_renders_identity_neighbours_channels_rpl(tmp_path: Path) -> None:
    answers = {  # shaped as the bridge turns control-API answers into ubus replies
        "status": to_reply("status", {
            "version": "0.1.0", "uptime_s": 42.5, "enrolled": True,
            "identity": {"acp_node_name": "rfcSELF+fd89:b714:f3db::1@acp.example",
                         "acp_address": "fd89:b714:f3db::1", "prefix_length": 128,
                         "acp_domain": "acp.example"}}),
        "neighbors": to_reply("neighbors", [{"peer": "fe80::2", "interface": "eth1",
                                             "methods": ["IKEv2"], "ttl_s": 170.0}]),
        "channels": to_reply("channels", [{"interface": "acp_1", "peer": "fe80::2",
                                           "peer_node_name": "rfcSELF+fd89:b714:f3db::2@x",
                                           "state": "up", "role": "decider", "ike_sas": 1,
                                           "child_sas": 1, "bytes": 2048}]),
        "rpl": to_reply("rpl", {"role": "member", "rank": 512, "dodag_id": "fd89:b714:f3db::9",
                                "parents": [{"address": "fe80::2", "ifname": "acp_1",
                                             "rank": 256, "preferred": True}],
                                "children": [{"address": "fe80::7", "ifname": "acp_2",
                                              "targets": ["fd89:b714:f3db::7/128"]}]}),
        "brski": {"state": "enrolled"},
        "map": to_reply("map", {"origin": "fd89:b714:f3db::1", "complete": True,
                                "duration_s": 0.4, "channels": [], "parents": [],
                                "nodes": [{"address": "fd89:b714:f3db::1", "reached": True},
                                          {"address": "fd89:b714:f3db::2", "reached": False,
                                           "error": "timeout", "hops": 1}]}),
        "uci": {"registrar": "1"},
    }
    out = render(tmp_path, answers)
    text = out["text"]
    for expected in ("rfcSELF+fd89:b714:f3db::1@acp.example", "fd89:b714:f3db::1/128",
                     "registrar", "enrolled (LDevID)", "fe80::2", "eth1", "IKEv2", "acp_1",
                     "decider", "up", "fd89:b714:f3db::9", "fe80::7", "fd89:b714:f3db::7/128",
                     "ACP map", "2 nodes (1 answered)", "node fd89:b714:f3db::2",
                     "not reached (timeout)"):
        assert expected in text, expected
    assert out["polls"] == [5, 30]  # the map is gathered over the ACP: asked less often


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_view_survives_acpd_not_running(tmp_path: Path) -> None:
    out = render(tmp_path, {})  # every ubus call fails: object acp not found
    text = out["text"]
    assert "not enrolled" in text and "No neighbour heard" in text
    assert "No secure channel" in text and "No parent" in text
    assert 'acpd is not running (ubus object "acp" not found)' in text


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_view_shows_why_a_call_failed(tmp_path: Path) -> None:
    """acpd's refusal and rpcd's access denial are shown, not hidden as 'not running'; a part
    that is not running (no `rpl` command before enrolment) is not an error."""
    text = render(tmp_path, {"status": {"error": "no answer from acpd within 10 s"},
                             "neighbors": {"neighbors": []}, "channels": {"channels": []},
                             "rpl": {"error": "unknown command 'rpl'"}, "brski": {},
                             "map": {"error": "unknown command 'map'"}})["text"]
    assert "Could not read this: no answer from acpd within 10 s" in text
    assert "unknown command" not in text and "RPL is not running" in text
    assert "No map: the node is not enrolled" in text
    assert "not running (ubus" not in text
    denied = render(tmp_path, {"reject": "Access denied"})["text"]
    assert "Access denied: log out and in again" in denied

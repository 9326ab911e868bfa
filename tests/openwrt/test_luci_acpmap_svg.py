"""luci-app-acp's ACP map picture (htdocs/luci-static/resources/acp/acpmap.js) rendered by a
real browser: headless Chromium from Debian (`apt-get install chromium`, scripts/install-deps).

The module is loaded as LuCI's loader runs a module (its source as the body of a function
whose parameters are the `'require'`d names; `baseclass.extend` stubbed to hand back the
object), given a fixed `map` answer as ubus delivers it (nulls dropped), and its <svg> put in
the page. The page then measures what the browser laid out (getBBox of every node, channel and
parent arrow) and writes it into the DOM, which `chromium --headless --dump-dom` prints.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.control.part import _plain

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "luci" / "luci-app-acp" / "htdocs" / "luci-static" / "resources" / "acp" / \
    "acpmap.js"
VIEW = ROOT / "luci" / "luci-app-acp" / "htdocs" / "luci-static" / "resources" / "view" / \
    "acp" / "status.js"

A, B, C, D, E = (f"fd89:b714:f3db:0:200:0:{n:x}:0" for n in (0x64, 0x65, 0x66, 0x67, 0x68))


def node(address: str, hops: int, state: str | None, rank: int | None, parent: str | None,
         roles: list[str] | None = None, reached: bool = True, error: str | None = None,
         origin: bool = False) -> dict[str, Any]:
    return {"address": address, "name": f"{address}@acp.example.com" if reached else None,
            "roles": roles or [], "state": state, "rank": rank, "parent": parent,
            "channels": 1 if reached else None, "hops": hops, "reached": reached,
            "error": error, "origin": origin}


# a registrar/root A; B under A; C and D under B; E learnt from D but silent
MAP = {
    "origin": A, "complete": False, "duration_s": 2.1,
    "nodes": [node(A, 0, "root", 256, None, ["registrar", "root"], origin=True),
              node(B, 1, "attached", 512, A), node(C, 2, "attached", 768, B),
              node(D, 2, "attached", 768, B),
              node(E, 3, None, None, None, reached=False, error="timeout")],
    "channels": [{"a": A, "b": B, "confirmed": True}, {"a": B, "b": C, "confirmed": True},
                 {"a": B, "b": D, "confirmed": True}, {"a": C, "b": D, "confirmed": True},
                 {"a": D, "b": E, "confirmed": False}],
    "parents": [{"child": B, "parent": A}, {"child": C, "parent": B},
                {"child": D, "parent": B}],
    "counters": {"asks": 4, "reports": 3, "asks_timed_out": 1},
    "limits": {"max_nodes": 256, "max_channels": 64, "max_report_bytes": 8192,
               "ask_timeout_s": 2.0, "deadline_s": 7.0},
}

HARNESS = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>acpmap</title></head>
<body><div id="map"></div><pre id="result">pending</pre>
<script>
var source = %(source)s;
var answer = %(answer)s;
var baseclass = { extend: function(o) { return o; } };
try {
  var acpmap = new Function('baseclass', source)(baseclass);
  var svg = acpmap.render(answer);
  document.getElementById('map').appendChild(svg);
  function boxes(selector, attr) {
    return Array.prototype.map.call(svg.querySelectorAll(selector), function(e) {
      var b = e.getBBox();
      return { key: attr.map(function(a) { return e.getAttribute(a); }),
               w: b.width, h: b.height, x: b.x, y: b.y };
    });
  }
  var result = {
    nodes: boxes('g.acp-node', ['data-address', 'data-state']),
    channels: boxes('line.acp-channel', ['data-a', 'data-b', 'stroke-dasharray']),
    parents: boxes('line.acp-parent', ['data-child', 'data-parent']),
    labels: Array.prototype.map.call(svg.querySelectorAll('text.acp-node-label'),
                                     function(t) { return t.textContent; }),
    svg: { w: svg.getBoundingClientRect().width, h: svg.getBoundingClientRect().height }
  };
  document.getElementById('result').textContent = JSON.stringify(result);
} catch (e) {
  document.getElementById('result').textContent = 'ERROR ' + e + '\\n' + e.stack;
}
</script></body></html>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium (apt-get install chromium; scripts/install-deps)")


def render(tmp_path: Path, answer: Any) -> dict[str, Any]:
    page = tmp_path / "acpmap.html"
    page.write_text(HARNESS % {"source": json.dumps(MODULE.read_text()),
                               "answer": json.dumps(answer)})
    profile = tmp_path / "profile"
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", "--disable-dev-shm-usage",
            "--virtual-time-budget=2000", "--dump-dom", page.as_uri()]
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert match, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    text = match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace(
        "&lt;", "<").replace("&gt;", ">")
    assert not text.startswith(("ERROR", "pending")), text
    result: dict[str, Any] = json.loads(text)
    return result


def test_chromium_draws_every_node_channel_and_parent(tmp_path: Path) -> None:
    result = render(tmp_path, _plain(MAP))  # as ubus delivers it: no nulls
    nodes = {n["key"][0]: n for n in result["nodes"]}
    assert set(nodes) == {A, B, C, D, E}
    assert all(n["w"] > 30 and n["h"] > 30 for n in nodes.values())  # a circle and its labels
    assert nodes[E]["key"][1] == "unreached" and nodes[A]["key"][1] == "root"
    # rows: A at the top, B below it, C and D side by side below B, E further down
    y = {a: n["y"] for a, n in nodes.items()}
    assert y[A] < y[B] < y[C] == y[D] < y[E]
    assert nodes[C]["x"] != nodes[D]["x"]
    # no two nodes overlap
    boxes = list(nodes.values())
    for i, p in enumerate(boxes):
        for q in boxes[i + 1:]:
            assert p["x"] + p["w"] <= q["x"] or q["x"] + q["w"] <= p["x"] or \
                p["y"] + p["h"] <= q["y"] or q["y"] + q["h"] <= p["y"], (p, q)
    channels = {(c["key"][0], c["key"][1]): c for c in result["channels"]}
    assert set(channels) == {(c["a"], c["b"]) for c in MAP["channels"]}
    assert all(c["w"] + c["h"] > 50 for c in channels.values())  # drawn with a length
    assert channels[(D, E)]["key"][2] == "6 4"        # one end reports it: dashed
    assert channels[(A, B)]["key"][2] is None
    assert {(p["key"][0], p["key"][1]) for p in result["parents"]} == {
        (p["child"], p["parent"]) for p in MAP["parents"]}
    assert all(p["h"] > 20 for p in result["parents"])  # each arrow climbs to its parent
    assert "…:66:0" in result["labels"]
    assert result["svg"]["w"] > 400 and result["svg"]["h"] > 300


def test_a_map_with_odd_or_missing_fields_still_draws(tmp_path: Path) -> None:
    odd = {"origin": A, "nodes": [{"address": A, "origin": True, "reached": True},
                                  {"address": B, "parent": "fd00::dead", "hops": 1},
                                  {"no": "address"}, None],
           "channels": [{"a": A, "b": "fd00::beef"}, {"a": A, "b": B}],
           "parents": [{"child": B, "parent": B}]}
    result = render(tmp_path, odd)
    assert {n["key"][0] for n in result["nodes"]} == {A, B}
    assert [(c["key"][0], c["key"][1]) for c in result["channels"]] == [(A, B)]
    empty = render(tmp_path, {})
    assert empty["nodes"] == [] and empty["channels"] == []


def test_the_status_view_requires_the_module_and_calls_map() -> None:
    view = VIEW.read_text()
    assert "'require acp.acpmap as acpmap';" in view
    assert "method: 'map'" in view and "acpmap.render(" in view

"""docs/control-api.md, acp_openwrt.control.api and the code agree on the control commands; the
run-time checker `problems` says what it should (no `from __future__ import annotations`
here: on 3.11 it hides NotRequired from TypedDict). The answers of a live acpd are checked
against the types in tests/netns/test_control_api.py."""

import re
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from acp_openwrt.control import api
from acp_openwrt.control.part import METHODS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "control-api.md"
SRC = ROOT / "src" / "acp_openwrt"
REGISTER = re.compile(r"""\.control\.register\(\s*["']([a-z_]+)["']""")


def registered_in_code() -> set[str]:
    """Every command any part registers (`ctx.control.register("name", ...)`), plus `help`."""
    found = {"help"}
    for path in SRC.rglob("*.py"):
        found |= set(REGISTER.findall(path.read_text()))
    return found


def documented() -> set[str]:
    return set(re.findall(r"^### `([a-z_]+)`$", DOC.read_text(), re.MULTILINE))


def test_the_doc_names_every_registered_command_and_no_other() -> None:
    code = registered_in_code()
    assert {"status", "reload", "interfaces", "rpl", "brski", "proxy"} <= code  # the scan works
    assert documented() == code
    assert set(api.ANSWERS) == code


def test_the_commands_table_and_ubus_methods_match() -> None:
    text = DOC.read_text()
    table = set(re.findall(r"^\| `([a-z_]+)` \| ", text.split("## Commands", 1)[1]
                           .split("###", 1)[0], re.MULTILINE))
    assert table == registered_in_code()
    assert set(METHODS.values()) <= registered_in_code()
    ubus = text.split("\n## ubus\n", 1)[1]
    assert all(f"`{method}`" in ubus for method in METHODS)


def test_every_answer_type_is_checkable() -> None:
    empty = {tp: [] if getattr(tp, "__origin__", None) is list else {}
             for tp in api.ANSWERS.values()}
    for tp, value in empty.items():
        api.problems(value, tp)  # raises TypeError on a type the checker does not know


class Inner(TypedDict):
    n: int


class Outer(TypedDict):
    name: str
    ratio: float
    flag: bool
    maybe: str | None
    kind: Literal["a", "b"]
    items: list[Inner]
    table: dict[str, int]
    extra: NotRequired[Any]


GOOD: dict[str, Any] = {"name": "x", "ratio": 1, "flag": False, "maybe": None, "kind": "a",
                        "items": [{"n": 1}], "table": {"k": 2}}


def test_problems_accepts_what_matches() -> None:
    assert api.problems(GOOD, Outer) == []
    assert api.problems({**GOOD, "extra": [1, {"any": None}]}, Outer) == []
    assert api.problems({"ok": True, "result": None}, api.OkReply) == []
    assert api.problems({"ok": False, "error": "busy"}, api.ErrorReply) == []


def test_problems_names_each_mismatch() -> None:
    bad = {**GOOD, "ratio": "1", "flag": 0, "maybe": 3, "kind": "c", "items": [{"n": True}],
           "table": {"k": 1.5}, "surplus": 1}
    del bad["name"]
    found = api.problems(bad, Outer, "r")
    assert found == [
        "r: key 'name' missing (Outer)",
        "r: key 'surplus' not in Outer",
        "r.ratio: '1' is not float",
        "r.flag: 0 is not bool",
        "r.maybe: 3 matches none of str | None",
        "r.kind: 'c' is not one of 'a', 'b'",
        "r.items[0].n: True is not int",
        "r.table['k']: 1.5 is not int",
    ]
    assert api.problems({"ok": 1, "result": 2}, api.OkReply) == ["result.ok: 1 is not one of True"]
    assert api.problems([], Outer) == ["result: list is not an object (Outer)"]

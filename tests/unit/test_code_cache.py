"""code_cache: dataclass methods compiled by one start, used by the next (issue 19).

A class made with the table is the class made without it: the same methods, byte code,
signatures and behaviour; a second start compiles nothing; a table that is not ours, is
writable by others or is damaged is not used (and is replaced)."""
from __future__ import annotations

import dataclasses
import inspect
import marshal
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt import code_cache

pytestmark = pytest.mark.unit

SOURCE = '''
from __future__ import annotations
import dataclasses
from dataclasses import dataclass, field

@dataclass(frozen=True, order=True)
class A:
    x: int
    y: str = "b"
    z: list = field(default_factory=list, compare=False)

@dataclass(slots=True, kw_only=True)
class B:
    a: int = 1
    b: tuple = ()
    def total(self) -> int:
        return self.a + sum(self.b)

@dataclass(eq=False)
class C:
    v: float
    _: dataclasses.KW_ONLY
    w: float = 2.0
    def __post_init__(self) -> None:
        self.v = self.v * 2
'''


def _define() -> dict[str, Any]:
    module = types.ModuleType("cached_module")  # dataclasses reads string annotations there
    sys.modules[module.__name__] = module
    try:
        exec(compile(SOURCE, "cached_module.py", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


def _methods(cls: type) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items()
            if inspect.isfunction(value) and value.__code__.co_filename == "<string>"}


@pytest.fixture
def table(tmp_path: Path):
    code_cache.finish()  # (a test that ran acpd.main in this process left it installed)
    path = tmp_path / "table.marshal"
    yield path
    code_cache.finish()  # never leave dataclasses hooked for the next test
    assert "exec" not in dataclasses.__dict__


def test_second_start_compiles_nothing_and_makes_the_same_classes(table: Path) -> None:
    plain = _define()  # without the cache, as Python would
    assert code_cache.install(table)
    _define()
    compiled = len(code_cache._new)
    assert compiled >= 10  # every generated method compiled once ...
    assert code_cache.finish() == compiled and table.exists()
    assert code_cache.install(table)
    second = _define()
    assert code_cache._new == {}  # ... and found in the table by the next start
    code_cache.finish()
    for name in ("A", "B", "C"):
        ours, theirs = _methods(second[name]), _methods(plain[name])
        assert ours.keys() == theirs.keys() and ours
        for method in ours:
            assert ours[method].__code__.co_code == theirs[method].__code__.co_code
            assert str(inspect.signature(ours[method])) == str(inspect.signature(theirs[method]))
    a_cls, b_cls, c_cls = second["A"], second["B"], second["C"]
    assert a_cls(1) == a_cls(1, "b", [3]) and a_cls(1) < a_cls(2)
    assert hash(a_cls(1)) == hash(plain["A"](1))
    assert repr(a_cls(1)) == repr(plain["A"](1)) == "A(x=1, y='b', z=[])"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a_cls(1).x = 2  # type: ignore[misc]
    assert b_cls(a=2, b=(1, 2)).total() == 5 and b_cls.__slots__ == ("a", "b")
    with pytest.raises(TypeError):
        b_cls(1)
    c = c_cls(1.0, w=3.0)
    assert (c.v, c.w) == (2.0, 3.0) and c != c_cls(1.0, w=3.0)  # eq=False: identity


@pytest.mark.parametrize("damage", ["group-writable", "garbage", "wrong types",
                                    "out of range", "unsorted", "truncated"])
def test_a_table_that_is_not_sound_is_not_used_and_is_replaced(table: Path, damage: str) -> None:
    assert code_cache.install(table)
    _define()
    code_cache.finish()
    good = table.read_bytes()
    if damage == "group-writable":
        os.chmod(table, 0o664)
    elif damage == "garbage":
        table.write_bytes(b"\x00not marshal" * 10)
    elif damage == "wrong types":
        table.write_bytes(marshal.dumps((code_cache.FORMAT, "keys", b"", b"")))
    elif damage == "unsorted":
        t = code_cache._read(table)
        keys = t.keys[16:32] + t.keys[:16] + t.keys[32:]
        table.write_bytes(marshal.dumps((code_cache.FORMAT, keys, t.ends, t.blob)))
    elif damage == "out of range":
        t = code_cache._read(table)
        ends = t.ends[:-4] + (len(t.blob) + 1).to_bytes(4, "little")
        table.write_bytes(marshal.dumps((code_cache.FORMAT, t.keys, ends, t.blob)))
    else:
        table.write_bytes(good[: len(good) // 2])
    assert len(code_cache._read(table)) == 0
    assert code_cache.install(table)
    _define()
    assert code_cache._new  # compiled again: nothing was taken from that file
    code_cache.finish()
    assert len(code_cache._read(table)) > 0  # written anew, sound
    assert table.stat().st_mode & 0o022 == 0


def test_install_without_finish_leaves_classes_working_and_finish_unhooks(table: Path) -> None:
    assert code_cache.install(table)
    assert dataclasses.__dict__.get("exec") is code_cache._exec
    namespace = _define()
    assert namespace["A"](5).x == 5
    code_cache.finish()
    assert "exec" not in dataclasses.__dict__
    assert code_cache._index is None and code_cache._new == {}


def test_the_pledges_idevid_check_fills_a_missing_table(tmp_path: Path) -> None:
    """A node's first IDevID check (a fresh Python, as acpd starts it) leaves a copy behind
    that fills the table with the enrolled parts' dataclasses, after answering at once."""
    import subprocess
    import time

    from acp_openwrt.lab.masa import Masa
    masa = Masa.create(tmp_path / "vendor")
    device = masa.issue_idevid("SN-WARM")
    directory = tmp_path / "pycache"
    script = (
        "import sys, time; from pathlib import Path; from acp_openwrt import code_cache; "
        "code_cache.DIRECTORY = Path(sys.argv[1]); "
        "from acp_openwrt.brski.pledge import idevid_check; t = time.monotonic(); "
        "code = idevid_check.main(sys.argv[2:]); "
        "print(code, round(time.monotonic() - t, 3))")
    src = str(Path(code_cache.__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", script, str(directory), str(device.cert_path),
                          str(device.key_path), str(masa.anchor_path)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": src},
                         check=True)
    assert out.stdout.split()[0] == "0"  # the verdict, not held back by the warming
    path = code_cache.cache_path(directory)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.2)
    # what an enrolled node defines at its start: the channels' and RPL's dataclasses among it
    assert len(code_cache._read(path)) > 300
    # a second check does not start another copy: the table is there
    from acp_openwrt.brski.pledge.idevid_check import warm_code_cache
    original = code_cache.DIRECTORY
    code_cache.DIRECTORY = directory
    try:
        assert warm_code_cache() is False
    finally:
        code_cache.DIRECTORY = original


def test_table_lookup_finds_every_entry_and_nothing_else() -> None:
    entries = {bytes([i]) * 16: bytes([i]) * (i % 7 + 1) for i in range(0, 250, 3)}
    table = code_cache.Table.build(entries)
    assert table.sound() and len(table) == len(entries)
    for key, data in entries.items():
        found = table.get(key)
        assert found is not None and bytes(found) == data
    assert table.get(b"\x01" * 16) is None and table.get(b"\xff" * 16) is None
    assert table.get(b"\x00" * 15 + b"\x01") is None
    assert table.entries() == entries
    assert code_cache.Table().sound() and code_cache.Table().get(b"\x00" * 16) is None

"""Dataclass methods compiled once and kept for later acpd starts (issue 19).

A third of what an enrolled acpd's imports cost went into `dataclasses` compiling the methods
it writes for each dataclass (__init__, __eq__, __repr__, __hash__, frozen __setattr__...):
some 700 compile() calls of generated source for the 135 dataclasses an enrolled node defines,
35 of its 105 ms of imports on the reference host, about half a second in the lab's TCG guest,
on the path of every start, the restart after enrolment included. That source is the same from
one start to the next, so its compiled code is kept in a file, as a .pyc keeps a module's:
`install` has dataclasses' `exec` look the source text up there (by its SHA-256, the
interpreter's own) before compiling it; `finish` (once the parts have started) writes what was
compiled anew and forgets the table, so that nothing of it stays in memory (a start unmarshals
only the code it looks up; the table is three blocks of bytes, no object per entry).
compile() with no inherited flags is what dataclasses' own exec of a string does, so each class
is what it would have been without the table.

The file lies beside acp_openwrt's own .pyc files (`__pycache__`, named with the interpreter's
cache tag and exact version). One that is unreadable, damaged, not such a table, owned by
another user or writable by others is not used (and is replaced at `finish`). Every start adds
what it compiled; a pledge's IDevID check (brski/pledge/idevid_check.py) fills a missing table
with what an enrolled node defines, so that the restart after its enrolment finds it, and
`python3 -m acp_openwrt.code_cache` fills it ahead (after an install or an upgrade).
"""
from __future__ import annotations

import builtins
import marshal
import os
import sys
from pathlib import Path
from types import CodeType
from typing import Any

from .sha256 import sha256

DIRECTORY = Path(__file__).resolve().parent / "__pycache__"
MAX_BYTES = 4 << 20  # a table larger than this is not read (under 1 MB in practice)
FORMAT = 2
KEY_BYTES = 16
END_BYTES = 4
_index: Table | None = None
_new: dict[bytes, CodeType] = {}
_path: Path | None = None


class Table:
    """The table as three blocks of bytes and no object per entry (what a start leaves behind
    in the allocator's pools is what counts, issue 19): the source texts' SHA-256 (first 16
    bytes each) in ascending order, each entry's end offset in `blob` (4 bytes, little-endian;
    an entry begins where the one before it ends), and the code objects' marshals one after
    another. A start unmarshals only the code it looks up."""

    def __init__(self, keys: bytes = b"", ends: bytes = b"", blob: bytes = b"") -> None:
        self.keys, self.ends, self.blob = keys, ends, blob

    def __len__(self) -> int:
        return len(self.keys) // KEY_BYTES

    def _key(self, i: int) -> bytes:
        return self.keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]

    def _end(self, i: int) -> int:
        return int.from_bytes(self.ends[i * END_BYTES:(i + 1) * END_BYTES], "little")

    def get(self, key: bytes) -> memoryview | None:
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(self) or self._key(lo) != key:
            return None
        return memoryview(self.blob)[self._end(lo - 1) if lo else 0:self._end(lo)]

    def entries(self) -> dict[bytes, bytes]:
        return {self._key(i): self.blob[self._end(i - 1) if i else 0:self._end(i)]
                for i in range(len(self))}

    def sound(self) -> bool:
        n = len(self)
        if len(self.keys) != n * KEY_BYTES or len(self.ends) != n * END_BYTES:
            return False
        if any(self._key(i) >= self._key(i + 1) or self._end(i) > self._end(i + 1)
               for i in range(n - 1)):
            return False
        return (self._end(n - 1) if n else 0) == len(self.blob)

    @classmethod
    def build(cls, entries: dict[bytes, bytes]) -> Table:
        keys, ends, end = [], [], 0
        for key in sorted(entries):
            end += len(entries[key])
            keys.append(key)
            ends.append(end.to_bytes(END_BYTES, "little"))
        return cls(b"".join(keys), b"".join(ends), b"".join(entries[k] for k in sorted(entries)))


def cache_path(directory: Path | None = None) -> Path:
    tag = sys.implementation.cache_tag or "python"
    # the exact version: marshal's format and the byte code go with it
    return (directory or DIRECTORY) / f"dataclass-code.{tag}.{sys.hexversion:x}.marshal"


def _key(source: str) -> bytes:
    return sha256(source.encode()).digest()[:KEY_BYTES]


def _read(path: Path) -> Table:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > MAX_BYTES:
                return Table()
            table = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return Table()
    try:
        version, keys, ends, blob = table
    except (TypeError, ValueError):
        return Table()
    if version != FORMAT or not all(type(b) is bytes for b in (keys, ends, blob)):
        return Table()
    read = Table(keys, ends, blob)
    return read if read.sound() else Table()


def _lookup(key: bytes) -> CodeType | None:
    data = _index.get(key) if _index is not None else None
    if data is None:
        return None
    try:
        code = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    return code if type(code) is CodeType else None


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """dataclasses' exec: source text is looked up in the table before it is compiled."""
    if isinstance(source, str) and _index is not None:
        key = _key(source)
        code = _lookup(key)
        if code is None:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _new[key] = code
        source = code
    builtins.exec(source, globals, locals)


def install(path: Path | None = None) -> bool:
    """Use the table at `path` (default: beside our .pyc files) for the dataclasses defined
    from now on, until `finish`. False if dataclasses does not run its generated source
    through a module-level exec (then nothing changes)."""
    global _index, _path
    import dataclasses
    if _index is not None:
        return True
    if not _uses_exec(dataclasses):
        return False
    _path = path or cache_path()
    _index = _read(_path)
    _new.clear()
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    return True


def _uses_exec(module: Any) -> bool:
    """Whether the module's functions call a global `exec` (CPython's dataclasses, 3.11 to
    3.13, does: in _create_fn or _FuncBuilder)."""
    functions = [v for v in vars(module).values() if callable(v)]
    functions += [a for v in functions if isinstance(v, type) for a in vars(v).values()]
    return any(isinstance(code := getattr(f, "__code__", None), CodeType)
               and "exec" in code.co_names for f in functions)


def finish() -> int:
    """Stop using the table: write it back if anything was compiled anew (atomically; a
    failure only loses the cache), then drop it. How many entries were new."""
    global _index, _path
    import dataclasses
    if dataclasses.__dict__.get("exec") is _exec:
        del dataclasses.exec  # type: ignore[attr-defined]
    table, path, new = _index, _path, dict(_new)
    _index, _path = None, None
    _new.clear()
    if table is not None and path is not None and new:
        _write(path, table, new)
    return len(new)


def _write(path: Path, table: Table, new: dict[bytes, CodeType]) -> None:
    """The table with the new entries, atomically; a failure only loses the cache."""
    entries = table.entries()
    entries.update((key, marshal.dumps(code)) for key, code in new.items())
    merged = Table.build(entries)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((FORMAT, merged.keys, merged.ends, merged.blob)))
        os.replace(tmp, path)
    except (OSError, ValueError):
        try:
            tmp.unlink()
        except OSError:
            pass


WARM_MODULES = (
    "acp_openwrt.acpd", "acp_openwrt.coordinator", "acp_openwrt.links.part",
    "acp_openwrt.brski.proxy.part", "acp_openwrt.rpl.part", "acp_openwrt.connect.part",
    "acp_openwrt.grasp.part", "acp_openwrt.acpmap.part", "acp_openwrt.channels.part",
    "acp_openwrt.revocation.part", "acp_openwrt.discovery.part",
    "acp_openwrt.brski.pledge.part", "acp_openwrt.brski.registrar.part",
    "acp_openwrt.control.part", "acp_openwrt.brski.proxy.process",
)


def main() -> int:
    """Fill the table with what acpd's parts define (their modules imported here)."""
    import importlib

    from . import asyncio_lean, pyroute2_lean, stand_ins
    pyroute2_lean.install()  # as acpd.main: the same modules, so the same dataclasses
    asyncio_lean.install()
    stand_ins.install(stand_ins.CRYPTOGRAPHY)
    if not install():
        print("code_cache: this Python's dataclasses compile otherwise; nothing to keep")
        return 0
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a trimmed build: what is not there is not needed
            print(f"code_cache: {name} not available ({exc})")
    path = _path
    added = finish()
    print(f"code_cache: {added} new entries in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

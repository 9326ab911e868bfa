"""Several files replaced together or not at all, whatever the moment of a crash.

One rename replaces one file atomically, but an identity is several files (LDevID, its key,
the trust anchors), possibly in several directories, and a key that does not match its
certificate is a lost identity. So a switch is a small redo journal:

1. each new file is written and fsynced under a pending name beside its target (`.NAME.new`);
2. a commit marker listing every target (relative to the marker, so that a copied or moved
   tree stays whole) and the SHA-256 of its new content is written under a temporary name,
   fsynced and renamed into place: this rename is the commit point;
3. each pending file is renamed over its target (its hash checked first), the directories
   are fsynced, and the marker is removed.

`recover_switch` (acpd at start; every switch before it begins) finishes a committed switch
(renames what is still pending, checks what is already in place) and otherwise deletes the
pending files of an uncommitted one, so the targets end wholly old or wholly new. A pending
file whose content is not what the marker recorded is never installed: the switch stops with
SwitchError and leaves everything as it is for the operator.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..sha256 import sha256

JOURNAL_VERSION = 1
MAX_MARKER_BYTES = 64 * 1024


class SwitchError(OSError):
    """The files could not be switched, or a half-done switch cannot be finished safely."""


@dataclass(frozen=True)
class NewFile:
    path: Path
    data: bytes
    mode: int


def pending_path(target: Path) -> Path:
    """Where the new content of `target` waits (same directory: the rename stays atomic)."""
    return target.with_name(f".{target.name}.new")


def _marker_temp(marker: Path) -> Path:
    return marker.with_name(f"{marker.name}.tmp")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, mode: int) -> None:
    """Create or truncate `path` (never through a symlink), mode first, then data, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask, or an older file's mode, must not widen a key's
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str | None:
    try:
        return sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))


def _directories(paths: Iterable[Path]) -> list[Path]:
    return sorted({p.parent for p in paths})


def _read_marker(marker: Path) -> list[tuple[Path, str]] | None:
    """The (target, sha256) list of a committed switch, None when there is none."""
    try:
        with open(marker, "rb") as handle:
            raw = handle.read(MAX_MARKER_BYTES + 1)
    except FileNotFoundError:
        return None
    try:
        journal = json.loads(raw)
        entries = [(_absolute(marker.parent / str(e["path"])), str(e["sha256"]))
                   for e in journal["files"]]
        if journal.get("version") != JOURNAL_VERSION or len(raw) > MAX_MARKER_BYTES or \
                not all(len(h) == 64 for _, h in entries):
            raise ValueError("unexpected content")
    except (ValueError, KeyError, TypeError) as exc:
        raise SwitchError(f"switch marker {marker} is unreadable ({exc}); files left as they "
                          f"are") from None
    return entries


def _finish(marker: Path, entries: list[tuple[Path, str]]) -> None:
    """Redo a committed switch: safe to run again after a crash at any point within it.
    Every file is checked before the first rename, so a bad one changes nothing."""
    moves = []
    for target, digest in entries:
        pending = pending_path(target)
        if os.path.lexists(pending):
            if _sha256(pending) != digest:
                raise SwitchError(f"{pending} does not hold what the switch recorded for "
                                  f"{target}: not installing it (remove {marker} and {pending} "
                                  f"to keep the current files)")
            moves.append((pending, target))
        elif _sha256(target) != digest:
            raise SwitchError(f"{target} does not hold what the switch recorded and no "
                              f"{pending.name} is left (remove {marker} to keep it)")
    for pending, target in moves:
        os.replace(pending, target)
    for directory in _directories([t for t, _ in entries]):
        fsync_dir(directory)
    os.unlink(marker)
    fsync_dir(marker.parent)


def _discard(marker: Path, targets: Iterable[Path]) -> bool:
    """Roll back an uncommitted switch: its pending files go, the targets were never touched."""
    leftovers = [p for p in [*(pending_path(t) for t in targets), _marker_temp(marker)]
                 if os.path.lexists(p)]
    for path in leftovers:
        os.unlink(path)
    for directory in _directories(leftovers):
        fsync_dir(directory)
    return bool(leftovers)


def recover_switch(marker: Path, targets: Iterable[Path]) -> str | None:
    """Finish or roll back a switch a crash interrupted: "completed", "rolled back" or None
    (nothing was pending). `targets` are the files whose pending copies an uncommitted
    switch may have left; a committed one names its own."""
    marker = _absolute(marker)
    targets = [_absolute(t) for t in targets]
    entries = _read_marker(marker)
    if entries is None:
        return "rolled back" if _discard(marker, targets) else None
    _finish(marker, entries)
    _discard(marker, targets)  # a stale temporary marker, if any
    return "completed"


def committed_view(marker: Path, targets: Iterable[Path]) -> dict[Path, Path]:
    """Read-only: target → the file it will hold once a committed switch is finished (its
    pending copy, or itself). For checks that must not write (acpd --check); SwitchError
    when the marker cannot be read (then the start would stop too)."""
    entries = _read_marker(_absolute(marker)) or []
    pending = {t for t, _ in entries if os.path.lexists(pending_path(t))}
    out = {}
    for target in targets:
        absolute = _absolute(target)
        out[Path(target)] = pending_path(absolute) if absolute in pending else Path(target)
    return out


def switch_files(files: Sequence[NewFile], marker: Path) -> None:
    """Replace every `files` target with its data, all or none (see the module's steps)."""
    files = [NewFile(_absolute(f.path), f.data, f.mode) for f in files]
    marker = _absolute(marker)
    targets = [f.path for f in files]
    if len(set(targets)) != len(targets) or marker in targets:
        raise SwitchError("the files of one switch must be distinct")
    recover_switch(marker, targets)  # an earlier crash with no restart in between
    for directory in _directories([*targets, marker]):
        directory.mkdir(parents=True, exist_ok=True)
    journal = json.dumps({"version": JOURNAL_VERSION, "files": [
        {"path": os.path.relpath(f.path, marker.parent),
         "sha256": sha256(f.data).hexdigest()} for f in files]})
    try:
        for new in files:
            write_synced(pending_path(new.path), new.data, new.mode)
        for directory in _directories(targets):
            fsync_dir(directory)
        write_synced(_marker_temp(marker), journal.encode(), 0o600)
        os.replace(_marker_temp(marker), marker)  # the commit point
        fsync_dir(marker.parent)
        _finish(marker, _read_marker(marker) or [])
    except OSError as exc:
        try:
            outcome = recover_switch(marker, targets)
        except OSError as again:
            raise SwitchError(f"{exc.strerror or exc}; and finishing the switch failed: "
                              f"{again.strerror or again}") from None
        raise SwitchError(f"{exc.strerror or exc} (switch {outcome or 'not started'})") from None

"""The LDevID, its key and the trust anchors change together or not at all.

A forked child runs `store_identity` (first enrolment, or a renewal over an old identity) and
dies with os._exit right after its n-th filesystem call, for every n until it finishes; the
parent then recovers as acpd does at start (`recover_identity`) and must find the whole old
identity or the whole new one (for a first enrolment: nothing or the new one), never a key
that does not match its certificate, and no leftover temporary file. The recovery itself is
crashed at every step too, and must end where an uninterrupted one ends.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acp_openwrt.brski.store import StoreError, load_identity, recover_identity, store_identity
from acp_openwrt.lab.pki import TestCA

# Every os call that touches the filesystem (tempfile and pathlib go through these too).
FS_CALLS = ("open", "write", "fsync", "fdatasync", "close", "replace", "rename", "unlink",
            "fchmod", "chmod", "mkdir", "link", "symlink", "truncate", "ftruncate", "rmdir")
CRASHED, FINISHED, FAILED = 97, 0, 98
MAX_STEPS = 400
NAME = "fd89b714f3db00000200000064000001+@acp.example.com"


@dataclass(frozen=True)
class Identity:
    cert: x509.Certificate
    key: object
    anchors: tuple[x509.Certificate, ...]

    def files(self) -> tuple[bytes, bytes, bytes]:
        """What store_identity writes for it: certificate, key, anchors (PEM)."""
        pem = serialization.Encoding.PEM
        return (self.cert.public_bytes(pem),
                self.key.private_bytes(pem, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                       serialization.NoEncryption()),
                b"".join(a.public_bytes(pem) for a in self.anchors))


@dataclass(frozen=True)
class Layout:
    """Where the three files live: one directory, or each in its own (as UCI allows)."""
    root: Path
    split: bool

    @property
    def cert(self) -> Path:
        return self.root / ("certs" if self.split else "etc") / "ldevid.pem"

    @property
    def key(self) -> Path:
        return self.root / ("private" if self.split else "etc") / "ldevid.key"

    @property
    def anchors(self) -> Path:
        return self.root / ("anchors" if self.split else "etc") / "domain-ca.pem"

    def paths(self) -> tuple[Path, Path, Path]:
        return self.cert, self.key, self.anchors

    def state(self) -> tuple[bytes | None, ...]:
        return tuple(p.read_bytes() if p.exists() else None for p in self.paths())

    def every_file(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file()}

    def write_plain(self, identity: Identity) -> None:
        """An identity as an older acpd (or an operator) left it: three plain files."""
        for path, data, mode in zip(self.paths(), identity.files(), (0o644, 0o600, 0o644),
                                    strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)

    def store(self, identity: Identity) -> None:
        store_identity(identity.cert, identity.key, identity.anchors,  # type: ignore[arg-type]
                       cert_path=self.cert, key_path=self.key, trust_anchors_path=self.anchors)

    def recover(self) -> None:
        recover_identity(self.cert, self.key, self.anchors)


def make_identity(directory: Path, label: str) -> Identity:
    ca = TestCA.create(directory / label, name=f"ca-{label}")
    node = ca.issue_node(f"node-{label}", acp_node_name=NAME)
    return Identity(node.certificate, node.private_key, (ca.certificate,))


def run_crashing(after: int, work: Callable[[], None]) -> int:
    """Run `work` in a forked child that dies (os._exit) right after its `after`-th
    filesystem call; CRASHED, FINISHED (it ran out of calls first) or FAILED."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        exit_now, calls = os._exit, [0]

        def counting(real: Callable[..., object]) -> Callable[..., object]:
            def call(*args: object, **kwargs: object) -> object:
                result = real(*args, **kwargs)
                calls[0] += 1
                if calls[0] >= after:
                    exit_now(CRASHED)
                return result
            return call
        code = FAILED
        try:
            for name in FS_CALLS:
                if hasattr(os, name):
                    setattr(os, name, counting(getattr(os, name)))
            work()
            code = FINISHED
        except BaseException:
            traceback.print_exc(file=sys.__stderr__)
        exit_now(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def crash_states(base: Path, prepare: Callable[[Layout], None], identity: Identity,
                 split: bool) -> list[Layout]:
    """One directory per crash point of storing `identity` over what `prepare` made, as the
    crash left it; the last one is the store that finished."""
    out = []
    for step in range(1, MAX_STEPS):
        layout = Layout(base / f"step{step:03d}", split)
        prepare(layout)
        code = run_crashing(step, functools.partial(layout.store, identity))
        assert code in (CRASHED, FINISHED), f"store failed at step {step} (see stderr)"
        out.append(layout)
        if code == FINISHED:
            return out
    raise AssertionError(f"store_identity made more than {MAX_STEPS} filesystem calls")


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Identity, Identity]:
    base = tmp_path_factory.mktemp("identities")
    return make_identity(base, "old"), make_identity(base, "new")


def _which(allowed: dict[str, tuple[bytes | None, ...]], i: int, content: bytes | None) -> str:
    """Which allowed identity file `i`'s content comes from ("absent", "other")."""
    if content is None:
        return "absent"
    return next((name for name, files in allowed.items() if files[i] == content), "other")


def assert_whole(layout: Layout, allowed: dict[str, tuple[bytes | None, ...]]) -> str:
    """The recovered files are one of `allowed` (by name), match, and nothing else is left."""
    state = layout.state()
    found = [name for name, files in allowed.items() if files == state]
    assert found, f"{layout.root.name}: a mix of identities: " + ", ".join(
        f"{p.name}={_which(allowed, i, s)}"
        for i, (p, s) in enumerate(zip(layout.paths(), state, strict=True)))
    present = {p for p, s in zip(layout.paths(), state, strict=True) if s is not None}
    assert layout.every_file() == present, f"{layout.root.name}: leftovers " \
        f"{sorted(str(p.relative_to(layout.root)) for p in layout.every_file() - present)}"
    if state[0] is not None:
        assert load_identity(layout.cert, layout.key) is not None
        assert layout.key.stat().st_mode & 0o077 == 0
    return found[0]


@pytest.mark.parametrize("split", [False, True], ids=["one-dir", "three-dirs"])
def test_renewal_crashed_at_every_step_is_old_or_new(
        tmp_path: Path, identities: tuple[Identity, Identity], split: bool) -> None:
    old, new = identities
    layouts = crash_states(tmp_path, lambda layout: layout.write_plain(old), new, split)
    outcomes = []
    for layout in layouts:
        layout.recover()
        outcomes.append(assert_whole(layout, {"old": old.files(), "new": new.files()}))
    assert outcomes[-1] == "new" and "old" in outcomes
    # once the switch is decided (new), no later crash brings the old identity back
    assert outcomes == sorted(outcomes, key=lambda o: o == "new")
    assert len(layouts) > 10  # every write, fsync and rename was a crash point


@pytest.mark.parametrize("split", [False, True], ids=["one-dir", "three-dirs"])
def test_first_enrolment_crashed_at_every_step_is_nothing_or_new(
        tmp_path: Path, identities: tuple[Identity, Identity], split: bool) -> None:
    _, new = identities
    layouts = crash_states(tmp_path, lambda layout: None, new, split)
    outcomes = []
    for layout in layouts:
        layout.recover()
        outcomes.append(assert_whole(layout, {"none": (None, None, None), "new": new.files()}))
    assert outcomes[-1] == "new" and "none" in outcomes
    assert outcomes == sorted(outcomes, key=lambda o: o == "new")


def test_recovery_crashed_at_every_step_ends_as_an_uninterrupted_one(
        tmp_path: Path, identities: tuple[Identity, Identity]) -> None:
    old, new = identities
    allowed = {"old": old.files(), "new": new.files()}
    layouts = crash_states(tmp_path / "store", lambda layout: layout.write_plain(old), new, True)
    interrupted = 0
    for layout in layouts[:-1]:
        reference = Layout(tmp_path / "reference" / layout.root.name, True)
        shutil.copytree(layout.root, reference.root)
        reference.recover()
        expected = assert_whole(reference, allowed)
        for step in range(1, MAX_STEPS):
            attempt = Layout(tmp_path / "attempt" / f"{layout.root.name}-{step:03d}", True)
            shutil.copytree(layout.root, attempt.root)
            code = run_crashing(step, attempt.recover)
            assert code in (CRASHED, FINISHED), f"recovery failed at step {step}"
            attempt.recover()
            assert assert_whole(attempt, allowed) == expected
            shutil.rmtree(attempt.root)
            if code == FINISHED:
                break
            interrupted += 1
    assert interrupted > 0


def test_a_store_after_a_crash_starts_clean(tmp_path: Path,
                                            identities: tuple[Identity, Identity]) -> None:
    """A crash mid-store with no restart in between (no recovery ran): the next store still
    ends with exactly its own identity."""
    old, new = identities
    for layout in crash_states(tmp_path, lambda layout: layout.write_plain(old), new, False):
        layout.store(old)
        assert assert_whole(layout, {"old": old.files()}) == "old"


def test_a_damaged_pending_file_is_not_switched_in(tmp_path: Path,
                                                   identities: tuple[Identity, Identity]) -> None:
    """A pending file that is not what the commit recorded (disk damage, an operator's edit)
    stops the recovery with StoreError instead of installing it."""
    old, new = identities
    layouts = crash_states(tmp_path, lambda layout: layout.write_plain(old), new, False)
    damaged = 0
    for layout in layouts:
        pending = [p for p in layout.every_file() if p.name.endswith(".new")]
        marker = [p for p in layout.every_file() if p.name.endswith(".switch")]
        if not (pending and marker):
            continue
        pending[0].write_bytes(b"garbage")
        before = layout.state()
        with pytest.raises(StoreError, match="does not hold what"):
            layout.recover()
        assert layout.state() == before
        damaged += 1
    assert damaged > 0


def test_domain_ca_first_start_crashed_at_every_step_is_nothing_or_whole(tmp_path: Path) -> None:
    """The registrar's CA key and certificate are one switch too: a crash on first start
    never leaves a key without its certificate (which the next start would refuse)."""
    from acp_openwrt.brski.registrar.domain_ca import DomainCA
    outcomes = []
    for step in range(1, MAX_STEPS):
        directory = tmp_path / f"step{step:03d}"
        cert, key = directory / "domain-ca.crt", directory / "domain-ca.key"
        code = run_crashing(step, functools.partial(DomainCA.load_or_create, cert, key,
                                                    domain="acp.example.com"))
        assert code in (CRASHED, FINISHED)
        created = {p for p in directory.rglob("*") if p.is_file()} if directory.exists() else set()
        ca = DomainCA.load_or_create(cert, key, domain="acp.example.com")  # recovers first
        if {cert, key} <= created:
            outcomes.append("whole")
        assert {p for p in directory.rglob("*") if p.is_file()} == {cert, key}
        assert ca.key_path.stat().st_mode & 0o077 == 0
        if code == FINISHED:
            break
    assert outcomes and outcomes[-1] == "whole" and len(outcomes) < step

"""Registrar state as one file: round trip, the 0600 mode, and every refusal (no root)."""
from __future__ import annotations

import socket
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acp_openwrt.acpctl import main as acpctl
from acp_openwrt.brski.registrar.backup import (
    BackupError,
    read_backup,
    restore_backup,
    write_backup,
)
from acp_openwrt.brski.registrar.bootstrap import (
    ALLOCATIONS_NAME,
    CA_CERT_NAME,
    CA_KEY_NAME,
    bootstrap_registrar,
    open_registrar_files,
)
from acp_openwrt.config import AcpConfig

pytestmark = pytest.mark.unit
DOMAIN = "acp.example.com"


def make_config(tmp: Path, name: str = "old") -> AcpConfig:
    node = tmp / name
    return AcpConfig(registrar=True, registrar_domain=DOMAIN, registrar_dir=node / "registrar",
                     ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                     trust_anchors=node / "ta.pem", run_dir=node / "run")


def boot(config: AcpConfig) -> None:
    bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)


@pytest.fixture
def old(tmp_path: Path) -> AcpConfig:
    """A registrar that enrolled its own LDevID and two pledges."""
    config = make_config(tmp_path)
    boot(config)
    files = open_registrar_files(config.registrar_dir, DOMAIN)
    try:
        files.allocator.allocate("SN-1")
        files.allocator.allocate("SN-2")
    finally:
        files.close()
    return config


def test_round_trip_keeps_ca_allocations_and_counters(old: AcpConfig, tmp_path: Path) -> None:
    backup = tmp_path / "reg.backup"
    info = write_backup(old.registrar_dir, backup)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert info.domain == DOMAIN and info.nodes == 3
    new = make_config(tmp_path, "new")
    restore_backup(backup, new.registrar_dir, domain=DOMAIN)
    for name in (CA_CERT_NAME, CA_KEY_NAME):
        assert (new.registrar_dir / name).read_bytes() == (old.registrar_dir / name).read_bytes()
    assert stat.S_IMODE((new.registrar_dir / CA_KEY_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((new.registrar_dir / ALLOCATIONS_NAME).stat().st_mode) == 0o600
    with sqlite3.connect(new.registrar_dir / ALLOCATIONS_NAME) as db:  # no key in the database
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert not tables & {"acp_backup", "acp_backup_files"}
    assert b"PRIVATE KEY" not in (new.registrar_dir / ALLOCATIONS_NAME).read_bytes()
    boot(new)  # the fresh node gets its own LDevID from the restored CA
    restored = open_registrar_files(new.registrar_dir, DOMAIN)
    before = open_registrar_files(old.registrar_dir, DOMAIN)
    try:
        assert restored.allocator.registrar_id == before.allocator.registrar_id
        assert restored.allocator.allocate("SN-1").new is False  # a serial keeps its address
        third = restored.allocator.allocate("SN-3")
        used = {before.allocator.allocate(s).address for s in ("SN-1", "SN-2")}
        assert third.new and third.address not in used
        assert restored.ca.certificate == before.ca.certificate
    finally:
        restored.close()
        before.close()


def test_existing_backup_file_is_kept_unless_force(old: AcpConfig, tmp_path: Path) -> None:
    backup = tmp_path / "reg.backup"
    backup.write_bytes(b"precious")
    with pytest.raises(BackupError, match="exists"):
        write_backup(old.registrar_dir, backup)
    assert backup.read_bytes() == b"precious"
    write_backup(old.registrar_dir, backup, force=True)
    assert read_backup(backup).nodes == 3
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".reg.backup.*"))  # no temporary file left


def test_restore_refuses_existing_state_unless_force(old: AcpConfig, tmp_path: Path) -> None:
    backup = tmp_path / "reg.backup"
    write_backup(old.registrar_dir, backup)
    other = make_config(tmp_path, "other")
    boot(other)
    before = (other.registrar_dir / CA_KEY_NAME).read_bytes()
    with pytest.raises(BackupError, match="--force"):
        restore_backup(backup, other.registrar_dir)
    assert (other.registrar_dir / CA_KEY_NAME).read_bytes() == before
    restore_backup(backup, other.registrar_dir, force=True)
    assert (other.registrar_dir / CA_KEY_NAME).read_bytes() == \
        (old.registrar_dir / CA_KEY_NAME).read_bytes()


def test_restore_refuses_a_left_over_journal(old: AcpConfig, tmp_path: Path) -> None:
    backup = tmp_path / "reg.backup"
    write_backup(old.registrar_dir, backup)
    target = tmp_path / "target"
    target.mkdir()
    (target / (ALLOCATIONS_NAME + "-journal")).write_bytes(b"hot")
    with pytest.raises(BackupError, match="journal"):
        restore_backup(backup, target)
    assert not (target / ALLOCATIONS_NAME).exists()


def test_restore_refuses_another_domain(old: AcpConfig, tmp_path: Path) -> None:
    backup = tmp_path / "reg.backup"
    write_backup(old.registrar_dir, backup)
    with pytest.raises(BackupError, match="registrar_domain"):
        restore_backup(backup, tmp_path / "x", domain="acp.other.example")
    assert not (tmp_path / "x" / CA_KEY_NAME).exists()


def test_bad_files_are_refused_before_anything_is_written(old: AcpConfig,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "target"
    not_db = tmp_path / "junk"
    not_db.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(BackupError, match="not a registrar backup"):
        restore_backup(not_db, target)
    plain = tmp_path / "plain.db"  # a database, but not a backup (the bare allocations)
    plain.write_bytes((old.registrar_dir / ALLOCATIONS_NAME).read_bytes())
    with pytest.raises(BackupError, match="acp_backup"):
        restore_backup(plain, target)
    with pytest.raises(BackupError, match="no such file"):
        restore_backup(tmp_path / "missing", target)
    assert not target.exists()


def test_future_version_and_mismatched_key_are_refused(old: AcpConfig, tmp_path: Path) -> None:
    backup = tmp_path / "reg.backup"
    write_backup(old.registrar_dir, backup)
    with sqlite3.connect(backup) as db:
        db.execute("UPDATE acp_backup SET value = '9' WHERE key = 'version'")
    with pytest.raises(BackupError, match="version 9"):
        read_backup(backup)
    with sqlite3.connect(backup) as db:
        db.execute("UPDATE acp_backup SET value = '1' WHERE key = 'version'")
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        db.execute("UPDATE acp_backup_files SET content = ? WHERE name = 'domain-ca.key'",
                   (other,))
    with pytest.raises(BackupError, match="not the key"):
        restore_backup(backup, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_backup_refuses_a_mismatched_ca_key(old: AcpConfig, tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    (old.registrar_dir / CA_KEY_NAME).write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(BackupError, match="not the key"):
        write_backup(old.registrar_dir, tmp_path / "reg.backup")
    assert not (tmp_path / "reg.backup").exists()


def test_backup_while_the_database_is_open_for_writing(old: AcpConfig, tmp_path: Path) -> None:
    files = open_registrar_files(old.registrar_dir, DOMAIN)  # as a running registrar holds it
    try:
        files.allocator.allocate("SN-9")
        assert write_backup(old.registrar_dir, tmp_path / "b").nodes == 4
    finally:
        files.close()


def test_acpctl_backup_and_restore(old: AcpConfig, tmp_path: Path, capsys) -> None:
    backup = tmp_path / "reg.backup"
    sock = tmp_path / "nosock"
    assert acpctl(["--socket", str(sock), "registrar", "backup", str(backup),
                   "--dir", str(old.registrar_dir), "--json"]) == 0
    assert '"allocations": 3' in capsys.readouterr().out
    assert acpctl(["--socket", str(sock), "registrar", "backup", str(backup),
                   "--dir", str(old.registrar_dir)]) == 2
    assert "exists" in capsys.readouterr().err
    target = tmp_path / "restored"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:  # "acpd" is running
        live.bind(str(sock))
        live.listen(1)
        assert acpctl(["--socket", str(sock), "registrar", "restore", str(backup),
                       "--dir", str(target)]) == 2
        assert "stop it" in capsys.readouterr().err
        assert not target.exists()
    assert acpctl(["--socket", str(sock), "registrar", "restore", str(backup),
                   "--dir", str(target)]) == 0  # a stale socket file is no acpd
    assert (target / CA_KEY_NAME).exists()

"""The registrar's state as one file: `acpctl registrar backup` / `restore`.

A registrar carries on only with its domain CA (certificate and key) and its allocations
database (Registrar-ID, Node-Number counters, serial -> address): with the CA but not the
counters a successor would hand out addresses already in use. The backup is one SQLite file:
an online-backup copy of `allocations.db` (sqlite3.Connection.backup: consistent while acpd
writes) plus two tables of our own, `acp_backup` (format, version, domain, Registrar-ID) and
`acp_backup_files` (the CA certificate, chain included, and its key, as PEM). One file, so it
cannot be restored half; SQLite, so it is read and checked with the library we already use.
It holds the CA key: it is created 0600 (never chmod-ed afterwards) and must be kept like
the key itself.

Restore checks the whole file before touching anything (format and version, integrity, the
allocation tables, the key is the certificate's, the domain) and then writes the CA and
the database together (file_switch: all or nothing), into a registrar that is not running.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..file_switch import NewFile, SwitchError, switch_files
from .bootstrap import ALLOCATIONS_NAME, CA_CERT_NAME, CA_KEY_NAME, RESTORE_MARKER

BACKUP_FORMAT = "acp-registrar-backup"
BACKUP_VERSION = 1
CA_CERT_ENTRY = "domain-ca.crt"
CA_KEY_ENTRY = "domain-ca.key"
_OWN_TABLES = ("acp_backup", "acp_backup_files")
_NEEDED_TABLES = ("meta", "counters", "nodes")


class BackupError(ValueError):
    """The backup cannot be written, or the file is not a usable registrar backup (one line)."""


@dataclass(frozen=True)
class BackupInfo:
    """What a checked backup holds."""
    domain: str
    registrar_id: int
    nodes: int
    ca_subject: str
    created: float


def _spki(obj: object) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def check_ca_pair(cert_pem: bytes, key_pem: bytes, where: str) -> x509.Certificate:
    """The CA certificate (first of the chain) when `key_pem` is its key; BackupError if not."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError) as exc:
        raise BackupError(f"{where}: the CA certificate or key does not load: {exc}") from None
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise BackupError(f"{where}: the CA key is not the key of the CA certificate "
                          f"{chain[0].subject.rfc4514_string()}")
    return chain[0]


def _create_exclusive(path: Path) -> None:
    """An empty file, mode 0600 from its first moment (the umask can only remove bits)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)


def _temp_beside(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def write_backup(registrar_dir: Path, target: Path, *, ca_cert: Path | None = None,
                 ca_key: Path | None = None, force: bool = False) -> BackupInfo:
    """Write the backup of `registrar_dir` to `target` (refused if it exists, unless force).

    `ca_cert`/`ca_key` name the CA in use when it is not the one in registrar_dir (an
    operator's sub-CA)."""
    ca_cert = ca_cert or registrar_dir / CA_CERT_NAME
    ca_key = ca_key or registrar_dir / CA_KEY_NAME
    database = registrar_dir / ALLOCATIONS_NAME
    if target.exists() and not force:
        raise BackupError(f"{target} exists (--force replaces it)")
    if not database.is_file():
        raise BackupError(f"{database} does not exist: no registrar state in {registrar_dir}")
    try:
        cert_pem, key_pem = ca_cert.read_bytes(), ca_key.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the domain CA: {exc.filename}: "
                          f"{exc.strerror or exc}") from None
    check_ca_pair(cert_pem, key_pem, str(ca_cert))
    temp = _temp_beside(target)
    try:
        _create_exclusive(temp)
        _fill(database, temp, cert_pem, key_pem)
        info = read_backup(temp)
        if force:
            os.replace(temp, target)
        else:
            os.link(temp, target)  # fails if the target appeared meanwhile: never overwritten
            os.unlink(temp)
    except FileExistsError:
        raise BackupError(f"{target} exists (--force replaces it)") from None
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {database}: {exc}") from None
    finally:
        temp.unlink(missing_ok=True)
    return info


def _fill(database: Path, temp: Path, cert_pem: bytes, key_pem: bytes) -> None:
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
    dest = sqlite3.connect(temp, isolation_level=None)
    try:
        source.backup(dest)
        row = dest.execute("SELECT value FROM meta WHERE key = 'routing_subdomain'").fetchone()
        rid = dest.execute("SELECT value FROM meta WHERE key = 'registrar_id'").fetchone()
        if row is None or rid is None:
            raise BackupError(f"{database} holds no Registrar-ID: not a registrar's database")
        dest.execute("BEGIN")
        dest.execute("CREATE TABLE acp_backup (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        dest.execute("CREATE TABLE acp_backup_files (name TEXT PRIMARY KEY, mode INTEGER "
                     "NOT NULL, content BLOB NOT NULL)")
        dest.executemany("INSERT INTO acp_backup VALUES (?, ?)", [
            ("format", BACKUP_FORMAT), ("version", str(BACKUP_VERSION)),
            ("domain", row[0]), ("registrar_id", rid[0]), ("created", repr(time.time()))])
        dest.executemany("INSERT INTO acp_backup_files VALUES (?, ?, ?)", [
            (CA_CERT_ENTRY, 0o644, cert_pem), (CA_KEY_ENTRY, 0o600, key_pem)])
        dest.execute("COMMIT")
    finally:
        source.close()
        dest.close()
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())


def _open_checked(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "acp_backup" not in tables:
            raise BackupError(f"{path} is not a registrar backup (no acp_backup table)")
        meta = dict(db.execute("SELECT key, value FROM acp_backup").fetchall())
        if meta.get("format") != BACKUP_FORMAT:
            raise BackupError(f"{path} is not a registrar backup (format "
                              f"{meta.get('format')!r})")
        if meta.get("version") != str(BACKUP_VERSION):
            raise BackupError(f"{path} is backup version {meta.get('version')}; this acpd "
                              f"reads version {BACKUP_VERSION}")
        missing = [t for t in (*_NEEDED_TABLES, "acp_backup_files") if t not in tables]
        if missing:
            raise BackupError(f"{path} lacks table(s) {', '.join(missing)}")
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"{path} is damaged: {verdict}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise BackupError(f"{path} is not a registrar backup: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db


def _entries(db: sqlite3.Connection, path: Path) -> tuple[bytes, bytes]:
    files = dict(db.execute("SELECT name, content FROM acp_backup_files").fetchall())
    if CA_CERT_ENTRY not in files or CA_KEY_ENTRY not in files:
        raise BackupError(f"{path} lacks the domain CA certificate or key")
    return bytes(files[CA_CERT_ENTRY]), bytes(files[CA_KEY_ENTRY])


def read_backup(path: Path) -> BackupInfo:
    """Check a backup file completely; what it holds, or BackupError naming the problem."""
    db = _open_checked(path)
    try:
        cert_pem, key_pem = _entries(db, path)
        ca = check_ca_pair(cert_pem, key_pem, str(path))
        meta = dict(db.execute("SELECT key, value FROM acp_backup").fetchall())
        alloc = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if alloc.get("registrar_id") != meta.get("registrar_id"):
            raise BackupError(f"{path}: its Registrar-ID does not match its allocations")
        nodes = db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
        return BackupInfo(domain=meta["domain"], registrar_id=int(meta["registrar_id"]),
                          nodes=nodes, ca_subject=ca.subject.rfc4514_string(),
                          created=float(meta["created"]))
    except (sqlite3.DatabaseError, KeyError, ValueError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"{path} is not a usable registrar backup: {exc}") from None
    finally:
        db.close()


def restore_backup(path: Path, registrar_dir: Path, *, domain: str | None = None,
                   force: bool = False) -> BackupInfo:
    """Install a checked backup into `registrar_dir` (CA and allocations together).

    Refused when the directory already holds a CA or a database, unless force; the caller
    makes sure no registrar runs on it (acpctl asks the control socket)."""
    info = read_backup(path)
    if domain is not None and info.domain.lower() != domain.lower():
        raise BackupError(f"{path} is a registrar of {info.domain}, but registrar_domain is "
                          f"{domain}")
    targets = [registrar_dir / CA_CERT_NAME, registrar_dir / CA_KEY_NAME,
               registrar_dir / ALLOCATIONS_NAME]
    present = [str(t) for t in targets if t.exists()]
    if present and not force:
        raise BackupError(f"{', '.join(present)} exist(s): restore replaces a registrar's "
                          f"state only with --force")
    # SQLite would apply a crashed writer's journal to whatever file then has the name, the
    # restored one included: refuse rather than have it corrupted on the next open.
    journals = [p for p in (registrar_dir / f"{ALLOCATIONS_NAME}{s}"
                            for s in ("-journal", "-wal")) if p.exists()]
    if journals:
        raise BackupError(f"{journals[0]} exists (a registrar stopped mid-write): start and "
                          f"stop acpd once so SQLite finishes it, then restore")
    registrar_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = _temp_beside(registrar_dir / ALLOCATIONS_NAME)
    try:
        _create_exclusive(temp)
        source = _open_checked(path)
        try:
            cert_pem, key_pem = _entries(source, path)
            dest = sqlite3.connect(temp, isolation_level=None)
            try:
                source.backup(dest)
                for table in _OWN_TABLES:
                    dest.execute(f"DROP TABLE {table}")
                dest.execute("VACUUM")  # the key's pages must not linger in the free list
            finally:
                dest.close()
        finally:
            source.close()
        database = temp.read_bytes()
        switch_files([NewFile(targets[1], key_pem, 0o600), NewFile(targets[0], cert_pem, 0o644),
                      NewFile(targets[2], database, 0o600)], registrar_dir / RESTORE_MARKER)
    except SwitchError as exc:
        raise BackupError(f"cannot install the backup into {registrar_dir}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot restore into {registrar_dir}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot restore {path}: {exc}") from None
    finally:
        temp.unlink(missing_ok=True)
    return info

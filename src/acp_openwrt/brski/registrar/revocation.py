"""The registrar's revocations (RFC 8994 §6.2.5.3): which certificates it issued, which are
revoked, and the CRL it serves over the ACP.

Kept in the registrar's sqlite database (`allocations.db`, so `acpctl registrar backup` holds
it too), in tables of their own: `issued` (every certificate the registrar issued: serial,
acp-node-name, expiry), `revoked` (serial, name, when, why) and `revoked_names`. Revoking an
acp-node-name revokes every certificate issued to it and refuses that name any further
certificate: renewal (EST /simplereenroll) and a new enrolment of its pledge alike, so a stolen
device does not come back by enrolling again. Revoking one serial revokes that certificate only
(its renewal is refused; the node may enrol again with its IDevID).

`CrlPublisher` builds the CRL from the tables, signed by the domain CA, and rebuilds it when a
revocation was added or half its validity (12 h of 24 h) has passed; its CRL number only
goes up (kept in the `crl_meta` table), so nodes keep the newest. The registrar worker signs
it (worker.py) and writes it to a file; acpd answers `GET /acp.crl` from that file
(crl_http.py, re-exported here: `serve_crl`).
"""
from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...identity.certificate import find_acp_node_name, validity
from ...logsafe import logsafe
from ...revocation.crl import DEFAULT_VALIDITY, RevokedEntry, build_crl
from .crl_http import crl_handler, serve_crl
from .domain_ca import DomainCA

LOG = logging.getLogger("acpd.brski.registrar")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
    serial TEXT PRIMARY KEY, acp_node_name TEXT, not_after REAL NOT NULL, issued REAL NOT NULL);
CREATE INDEX IF NOT EXISTS issued_by_name ON issued (acp_node_name);
CREATE TABLE IF NOT EXISTS revoked (
    serial TEXT PRIMARY KEY, acp_node_name TEXT, revoked REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked_names (acp_node_name TEXT PRIMARY KEY, revoked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS crl_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class RevocationError(ValueError):
    """Nothing to revoke by that name or serial (one line for acpctl)."""


def serial_text(serial: int) -> str:
    """A certificate serial as acpctl shows and takes it: lower-case hex, no separators."""
    return f"{serial:x}"


def parse_serial(text: str) -> int:
    """A serial as hex, with or without 0x or colons (RevocationError otherwise)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise RevocationError(f"{text!r} is neither an acp-node-name nor a hex serial") from None
    if value <= 0:
        raise RevocationError(f"serial {text!r} must be positive")
    return value


@dataclass(frozen=True)
class Revoked:
    serial: str
    acp_node_name: str | None
    revoked: float          # Unix seconds
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "acp_node_name": self.acp_node_name,
                "revoked": self.revoked, "reason": self.reason}


class RevocationStore:
    """The issued and revoked certificates of one registrar, in its sqlite file `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def record_issued(self, cert: x509.Certificate) -> None:
        found = find_acp_node_name(cert)
        start, end = validity(cert)
        self._db.execute("INSERT OR REPLACE INTO issued VALUES (?, ?, ?, ?)",
                         (serial_text(cert.serial_number), found.text if found else None,
                          end.timestamp(), start.timestamp()))

    def revoke(self, target: str, now: dt.datetime, reason: str = "") -> list[Revoked]:
        """Revoke an acp-node-name (every certificate issued to it, and the name) or one
        serial; returns what was newly revoked (RevocationError: unknown name, bad serial)."""
        stamp = now.timestamp()
        reason = logsafe(reason or "revoked by the operator", 200)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if "@" in target:
                name = target.strip()
                rows = self._db.execute("SELECT serial FROM issued WHERE acp_node_name = ?",
                                        (name,)).fetchall()
                known = self._db.execute("SELECT 1 FROM revoked_names WHERE acp_node_name = ?",
                                         (name,)).fetchone()
                if not rows and known is None:
                    raise RevocationError(f"no certificate was issued to {name}")
                self._db.execute("INSERT OR IGNORE INTO revoked_names VALUES (?, ?)",
                                 (name, stamp))
                targets: list[tuple[str, str | None]] = [(row[0], name) for row in rows]
            else:
                serial = serial_text(parse_serial(target))
                row = self._db.execute("SELECT acp_node_name FROM issued WHERE serial = ?",
                                       (serial,)).fetchone()
                if row is None:
                    LOG.warning("registrar: revoking serial %s, which this registrar has no "
                                "record of issuing", serial)
                targets = [(serial, row[0] if row else None)]
            added = []
            for serial, name_of in targets:
                cursor = self._db.execute("INSERT OR IGNORE INTO revoked VALUES (?, ?, ?, ?)",
                                          (serial, name_of, stamp, reason))
                if cursor.rowcount:
                    added.append(Revoked(serial, name_of, stamp, reason))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added

    def revoked(self) -> list[Revoked]:
        rows = self._db.execute("SELECT serial, acp_node_name, revoked, reason FROM revoked "
                                "ORDER BY revoked, serial").fetchall()
        return [Revoked(*row) for row in rows]

    def revoked_names(self) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT acp_node_name FROM revoked_names ORDER BY acp_node_name")]

    def is_revoked(self, serial: int) -> bool:
        return self._db.execute("SELECT 1 FROM revoked WHERE serial = ?",
                                (serial_text(serial),)).fetchone() is not None

    def name_revoked(self, acp_node_name: str) -> bool:
        return self._db.execute("SELECT 1 FROM revoked_names WHERE acp_node_name = ?",
                                (acp_node_name,)).fetchone() is not None

    def refusal(self, cert: x509.Certificate) -> str | None:
        """Why `cert` (an LDevID presented for renewal) gets nothing more, or None."""
        if self.is_revoked(cert.serial_number):
            return f"certificate {serial_text(cert.serial_number)} is revoked"
        found = find_acp_node_name(cert)
        if found is not None and self.name_revoked(found.text):
            return f"acp-node-name {found.text} is revoked"
        return None

    def revision(self) -> int:
        """Changes whenever a revocation is added (the CRL must then be rebuilt)."""
        return int(self._db.execute("SELECT COUNT(*) FROM revoked").fetchone()[0])

    def next_crl_number(self) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT value FROM crl_meta WHERE key = 'crl_number'"
                                   ).fetchone()
            number = (row[0] if row else 0) + 1
            self._db.execute("INSERT OR REPLACE INTO crl_meta VALUES ('crl_number', ?)",
                             (number,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return number


class CrlPublisher:
    """The current CRL of the domain CA (DER), rebuilt when needed."""

    def __init__(self, ca: DomainCA, store: RevocationStore, *,
                 validity: dt.timedelta = DEFAULT_VALIDITY) -> None:
        self.ca, self.store, self.validity = ca, store, validity
        self._der: bytes | None = None
        self._built_at: dt.datetime | None = None
        self._revision = -1
        self.number: int | None = None
        self.served = 0

    def current(self, now: dt.datetime) -> bytes:
        revision = self.store.revision()
        stale = self._built_at is None or now - self._built_at >= self.validity / 2 \
            or now < self._built_at
        if self._der is None or revision != self._revision or stale:
            entries = [RevokedEntry(int(r.serial, 16), dt.datetime.fromtimestamp(r.revoked, dt.UTC))
                       for r in self.store.revoked()]
            self.number = self.store.next_crl_number()
            crl = build_crl(self.ca.certificate, self.ca.key, entries, now=now,
                            number=self.number, validity=self.validity)
            self._der = crl.public_bytes(serialization.Encoding.DER)
            self._built_at, self._revision = now, revision
        return self._der

    def status(self) -> dict[str, Any]:
        return {"crl_number": self.number, "crl_served": self.served,
                "crl_built": None if self._built_at is None else round(
                    self._built_at.timestamp(), 1)}


def revoked_view(store: RevocationStore) -> dict[str, Any]:
    return {"revoked": [r.as_dict() for r in store.revoked()],
            "revoked_names": store.revoked_names()}


__all__: Sequence[str] = ("CrlPublisher", "RevocationError", "RevocationStore", "Revoked",
                          "crl_handler", "parse_serial", "revoked_view", "serial_text",
                          "serve_crl")

"""The registrar's ACP address allocator (RFC 8994 §6.11.7), persistent in sqlite.

One Registrar-ID (46 bits, so it fits Zone's 48 and Vlong's 46: given, else the caller's
default, else random; fixed in the database at the first start) and one
Node-Number counter per number space: Zone (any Zone-ID: Node-IDs are unique across zones),
Vlong-8 and Vlong-16. A counter only ever goes up, so a Node-Number is never handed out twice,
even after a node is forgotten. A serial number keeps its allocation, so renewal and
re-enrolment keep the address (§6.11.7.4). Every change is one sqlite transaction.
"""
from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ...identity.address import AcpAddress, Scheme, name_for_address, vlong_address, zone_address
from ...identity.node_name import parse_acp_node_name

REGISTRAR_ID_BITS = 46
NODE_NUMBER_LIMIT = {Scheme.ZONE: 1 << 15, Scheme.VLONG8: 1 << 23, Scheme.VLONG16: 1 << 15}
# Node-Number 0 is left unused: an all-zero Node-ID is easy to mistake for "unset".
FIRST_NODE_NUMBER = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (space TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    serial TEXT PRIMARY KEY, scheme TEXT NOT NULL, zone_id INTEGER NOT NULL,
    node_number INTEGER NOT NULL, acp_node_name TEXT NOT NULL UNIQUE, address TEXT NOT NULL UNIQUE,
    created REAL NOT NULL, updated REAL NOT NULL);
"""


class AllocationError(ValueError):
    """No address can be allocated (space exhausted, bad scheme, database mismatch)."""


@dataclass(frozen=True)
class Allocation:
    serial: str
    acp_node_name: str
    address: AcpAddress
    new: bool  # False: the serial already had this allocation (renewal, retry)


def registrar_id_refusal(path: Path, stored: int, wanted: int) -> str:
    """Why `wanted` (the option) cannot replace the Registrar-ID `path` holds."""
    return (f"{path} holds Registrar-ID {stored:012x}, the addresses issued so far carry it; "
            f"refusing to switch to {wanted:012x} (set option registrar_id to {stored:012x} "
            "or remove it)")


def stored_registrar_id(path: Path) -> int | None:
    """The Registrar-ID an allocations file holds, read without creating or changing anything
    (`acpd --check`); None when there is no such file or it holds none yet."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'registrar_id'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise AllocationError(f"{path}: {exc}") from None
    return int(row[0]) if row is not None else None


class Allocator:
    """Allocations of one ACP domain (and routing subdomain), kept in the sqlite file `path`."""

    def __init__(self, path: str | os.PathLike[str], *, domain: str, rsub: str = "",
                 registrar_id: int | None = None, default_id: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        os.chmod(self.path, 0o600)
        self._db.executescript(_SCHEMA)
        self.domain, self.rsub = domain, rsub
        parse_acp_node_name(f"0+{rsub}@{domain}" if rsub else f"0@{domain}")  # validates both
        self.registrar_id = self._meta_init(registrar_id, default_id)

    def close(self) -> None:
        self._db.close()

    def _meta_init(self, registrar_id: int | None, default_id: int | None) -> int:
        """The stored Registrar-ID; on first use `registrar_id` (explicit, e.g. the option),
        else `default_id`, else random. An explicit one that differs from the stored one is
        refused: the addresses already issued carry the stored one."""
        with self._transaction() as db:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            routing = f"{self.rsub}.{self.domain}" if self.rsub else self.domain
            if "routing_subdomain" in rows and rows["routing_subdomain"] != routing:
                raise AllocationError(f"{self.path} belongs to {rows['routing_subdomain']}, "
                                      f"not {routing}")
            if "registrar_id" in rows:
                stored = int(rows["registrar_id"])
                if registrar_id is not None and registrar_id != stored:
                    raise AllocationError(registrar_id_refusal(self.path, stored, registrar_id))
                return stored
            chosen = registrar_id if registrar_id is not None else \
                default_id if default_id is not None else secrets.randbits(REGISTRAR_ID_BITS)
            if not 0 <= chosen < (1 << REGISTRAR_ID_BITS):
                raise AllocationError(f"Registrar-ID {chosen:#x} does not fit in 46 bits")
            db.execute("INSERT INTO meta VALUES ('registrar_id', ?), ('routing_subdomain', ?)",
                       (str(chosen), routing))
            return chosen

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @property
    def routing_subdomain(self) -> str:
        return f"{self.rsub}.{self.domain}" if self.rsub else self.domain

    def _address(self, scheme: Scheme, number: int, zone_id: int) -> AcpAddress:
        if scheme is Scheme.ZONE:
            return zone_address(self.routing_subdomain, self.registrar_id, number, zone_id)
        if scheme is Scheme.VLONG8:
            return vlong_address(self.routing_subdomain, self.registrar_id, number, 8)
        if scheme is Scheme.VLONG16:
            return vlong_address(self.routing_subdomain, self.registrar_id, number, 16)
        raise AllocationError(f"scheme {scheme.value} is not allocated by the registrar")

    def allocate(self, serial: str, scheme: Scheme = Scheme.ZONE, zone_id: int = 0) -> Allocation:
        """The serial's existing allocation, or a new one with the next Node-Number."""
        if not serial:
            raise AllocationError("cannot allocate for an empty serial number")
        with self._transaction() as db:
            row = db.execute("SELECT acp_node_name, address FROM nodes WHERE serial = ?",
                             (serial,)).fetchone()
            if row is not None:
                db.execute("UPDATE nodes SET updated = ? WHERE serial = ?", (time.time(), serial))
                return Allocation(serial, row[0], AcpAddress.decode(row[1]), False)
            space = scheme.value
            found = db.execute("SELECT next FROM counters WHERE space = ?", (space,)).fetchone()
            number = found[0] if found else FIRST_NODE_NUMBER
            if scheme not in NODE_NUMBER_LIMIT:
                raise AllocationError(f"scheme {scheme.value} is not allocated by the registrar")
            if number >= NODE_NUMBER_LIMIT[scheme]:
                raise AllocationError(f"{scheme.value} Node-Numbers of Registrar-ID "
                                      f"{self.registrar_id:#x} are exhausted")
            address = self._address(scheme, number, zone_id)
            name = name_for_address(address, self.domain, self.rsub or None).format()
            db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (space, number + 1))
            now = time.time()
            db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (serial, space, zone_id, number, name, str(address.address), now, now))
            return Allocation(serial, name, address, True)

    def lookup_name(self, acp_node_name: str) -> Allocation | None:
        """The allocation holding this acp-node-name (renewal keeps it), or None."""
        row = self._db.execute("SELECT serial, address FROM nodes WHERE acp_node_name = ?",
                               (acp_node_name,)).fetchone()
        return None if row is None else Allocation(row[0], acp_node_name,
                                                   AcpAddress.decode(row[1]), False)

    def holds(self, serial: str) -> bool:
        """The serial has an allocation already (renewal, a retried enrolment)."""
        return self._db.execute("SELECT 1 FROM nodes WHERE serial = ?",
                                (serial,)).fetchone() is not None

    def forget(self, serial: str) -> bool:
        """Drop a node's allocation; its Node-Number is still never reused."""
        with self._transaction() as db:
            return db.execute("DELETE FROM nodes WHERE serial = ?", (serial,)).rowcount > 0

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, all or nothing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")

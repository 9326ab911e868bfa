"""Storing the LDevID, its key and the trust anchors so that a crash never leaves half of it.

The three files change in one `file_switch` (pending copies, a commit marker beside the
certificate, renames): after a crash at any point `recover_identity` (acpd at start, and every
store before it writes) leaves them wholly old or wholly new, never a key that does not match
its certificate. `identity_problems` is what `acpd --check` reports about the stored identity.

What an enrolled node reads in its steady state (acpd's start checks, `stored_certificate`)
uses the parse-only readers (identity/cert_reader.py, key_reader.py), not cryptography (issue
19); `load_identity` (the key as cryptography's object) is for renewal and enrolment.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .file_switch import (
    NewFile,
    SwitchError,
    committed_view,
    fsync_dir,
    pending_path,
    recover_switch,
    switch_files,
    write_synced,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from ..identity.cert_reader import Certificate

    PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def __getattr__(name: str) -> Any:
    """PrivateKey at run time too, with cryptography imported only then: an acpd that only
    recovers an interrupted switch or waits to pledge needs none of it (issue 19)."""
    if name == "PrivateKey":
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        return ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StoreError(OSError):
    """The identity could not be written (or read back) where the configuration says."""


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Replace the single file `path` with `data` (file mode `mode`) in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_synced(pending_path(target), data, mode)
    os.replace(pending_path(target), target)
    fsync_dir(target.parent)


def identity_marker(cert_path: str | os.PathLike[str]) -> Path:
    """The commit marker of an identity switch: beside the certificate, which names it."""
    cert = Path(cert_path)
    return cert.with_name(f".{cert.name}.switch")


@dataclass(frozen=True)
class StoredIdentity:
    cert_path: Path
    key_path: Path
    trust_anchors_path: Path


def store_identity(cert: x509.Certificate, key: PrivateKey, anchors: Sequence[x509.Certificate],
                   *, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                   trust_anchors_path: str | os.PathLike[str]) -> StoredIdentity:
    """Write key (0600), trust anchors and certificate, all together or not at all."""
    from cryptography.hazmat.primitives import serialization
    if not anchors:
        raise StoreError("refusing to store an identity without trust anchors")
    files = [
        NewFile(Path(key_path), key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), 0o600),
        NewFile(Path(trust_anchors_path), b"".join(a.public_bytes(serialization.Encoding.PEM)
                                                   for a in anchors), 0o644),
        NewFile(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), 0o644),
    ]
    try:
        switch_files(files, identity_marker(cert_path))
    except OSError as exc:
        raise StoreError(f"cannot write the new identity: {exc.strerror or exc}") from None
    return StoredIdentity(Path(cert_path), Path(key_path), Path(trust_anchors_path))


def recover_identity(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                     trust_anchors_path: str | os.PathLike[str]) -> str | None:
    """Finish or roll back an identity switch a crash interrupted (see file_switch):
    "completed", "rolled back" or None when there was none."""
    try:
        return recover_switch(identity_marker(cert_path),
                              [Path(cert_path), Path(key_path), Path(trust_anchors_path)])
    except SwitchError as exc:
        raise StoreError(f"identity switch: {exc.strerror or exc}") from None
    except OSError as exc:
        raise StoreError(f"identity switch: {exc.strerror or exc}: "
                         f"{exc.filename or cert_path}") from None


def pending_identity(cert_path: Path, key_path: Path) -> tuple[Path, Path, bool]:
    """(certificate, key) files as they will be once recovery has run, and whether a committed
    switch is pending: a read-only view for checks that must not write."""
    marker = identity_marker(cert_path)
    try:
        view = committed_view(marker, [cert_path, key_path])
    except SwitchError as exc:
        raise StoreError(f"identity switch: {exc}") from None
    return view[cert_path], view[key_path], os.path.lexists(marker)


def load_identity(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                  ) -> tuple[x509.Certificate, PrivateKey] | None:
    """The stored certificate and its key, or None when absent or not a matching pair."""
    try:
        cert_pem, key_pem = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
    except OSError:
        return None  # (a pledge has none yet: cryptography is not even imported)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) or \
            cert.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            key.public_key().public_bytes(serialization.Encoding.DER, spki):
        return None
    return cert, key


def stored_certificate(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                       ) -> Certificate | None:
    """The stored LDevID certificate (parsed, no cryptography), or None when it or its key is
    absent, unreadable or not a matching pair (load_identity's verdict, without the key)."""
    try:
        cert_pem, key_pem = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
    except OSError:
        return None  # (a pledge has none yet: the readers are not even imported)
    from ..identity.cert_reader import CertificateError, load_certificates
    from ..identity.key_reader import KeyFileError, key_matches
    try:
        cert = load_certificates(cert_pem)[0]
        if key_matches(cert.public_key, key_pem):
            return cert
    except (CertificateError, KeyFileError):
        pass
    return None


def key_problem(cert: Any, key_path: str | os.PathLike[str]) -> str | None:
    """Why `key_path` is not the private key of `cert`, or None. PermissionError passes up:
    a user who may not read the key learns nothing about it."""
    from ..identity.cert_reader import as_certificate
    from ..identity.key_reader import KeyFileError, key_matches
    try:
        data = Path(key_path).read_bytes()
    except PermissionError:
        raise
    except OSError as exc:
        return f"ldevid_key {key_path}: {exc.strerror or exc}"
    try:
        matches = key_matches(as_certificate(cert).public_key, data)
    except KeyFileError as exc:
        return f"ldevid_key {key_path} is not a usable PEM private key ({exc})"
    if not matches:
        return f"ldevid_key {key_path} is not the key of the LDevID certificate"
    return None


def validity_problem(cert: Any, now: dt.datetime) -> str | None:
    """"expired" or "not yet valid" in one line, or None."""
    from ..identity.cert_reader import validity
    not_before, not_after = validity(cert)
    if now < not_before:
        return f"not valid before {not_before:%Y-%m-%d %H:%M} UTC (is the clock right?)"
    if now >= not_after:
        return f"expired {not_after:%Y-%m-%d %H:%M} UTC"
    return None


def identity_problems(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str] | None,
                      now: dt.datetime) -> list[str]:
    """What makes the stored LDevID unusable: unreadable, expired, not yet valid, a key that
    is missing or not its own. Empty when it is fine (or absent: the node will enrol)."""
    from ..identity.cert_reader import CertificateError, load_certificate
    if not Path(cert_path).exists():
        return []
    try:
        cert = load_certificate(cert_path)
    except CertificateError as exc:
        return [f"ldevid_cert {exc}"]
    problems = []
    dates = validity_problem(cert, now)
    if dates:
        problems.append(f"ldevid_cert {cert_path} {dates}")
    if key_path is None:
        problems.append("ldevid_key is not set")
    else:
        try:
            problem = key_problem(cert, key_path)
        except PermissionError:
            problem = f"ldevid_key {key_path}: permission denied"
        if problem:
            problems.append(problem)
    return problems

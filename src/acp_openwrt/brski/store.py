"""Storing the LDevID, its key and the trust anchors so that a crash never leaves half of it.

Each file is written to a temporary name in its own directory, fsynced, then renamed over the
old one. The certificate is renamed last: it is what marks a node as enrolled, and a reader
(acpd at start) checks that the key file holds its key, so a crash between two renames looks
like "not enrolled yet" (or the old identity), never like a broken new one.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]


class StoreError(OSError):
    """The identity could not be written (or read back) where the configuration says."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Replace `path` with `data` (file mode `mode`) in one rename."""
    target = Path(path)
    temp = _write_temp(target, data, mode)
    os.replace(temp, target)
    _fsync_dir(target.parent)


@dataclass(frozen=True)
class StoredIdentity:
    cert_path: Path
    key_path: Path
    trust_anchors_path: Path


def store_identity(cert: x509.Certificate, key: PrivateKey, anchors: Sequence[x509.Certificate],
                   *, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                   trust_anchors_path: str | os.PathLike[str]) -> StoredIdentity:
    """Write key (0600), trust anchors and certificate (last), each atomically."""
    if not anchors:
        raise StoreError("refusing to store an identity without trust anchors")
    files = [
        (Path(key_path), key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600),
        (Path(trust_anchors_path), b"".join(a.public_bytes(serialization.Encoding.PEM)
                                            for a in anchors), 0o644),
        (Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), 0o644),
    ]
    temps: list[tuple[Path, Path]] = []
    try:
        for target, data, mode in files:
            temps.append((_write_temp(target, data, mode), target))
    except OSError as exc:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        raise StoreError(f"cannot write the new identity: {exc}") from None
    for temp, target in temps:
        os.replace(temp, target)
    for directory in {target.parent for _, target in temps}:
        _fsync_dir(directory)
    return StoredIdentity(Path(cert_path), Path(key_path), Path(trust_anchors_path))


def load_identity(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                  ) -> tuple[x509.Certificate, PrivateKey] | None:
    """The stored certificate and its key, or None when absent or not a matching pair."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) or \
            cert.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            key.public_key().public_bytes(serialization.Encoding.DER, spki):
        return None
    return cert, key

"""A registrar node's files before acpd starts: its domain CA and its own LDevID.

A registrar cannot enrol through BRSKI (it is where enrolment ends), so acpd calls
`bootstrap_registrar` before loading the node identity: the domain CA and the address
allocations live in `registrar_dir` (0700, keys 0600); the node's LDevID is issued by that CA
with an acp-node-name in `registrar_domain` from the allocator (so no pledge ever gets the same
address) and id-kp-cmcRA, since the same certificate signs the registrar voucher-requests the
MASA checks. Existing files are kept whenever they are consistent; anything that is not (an
LDevID of another domain or another CA, a key that does not match) is an error, never
silently replaced.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ObjectIdentifier

from ...identity.address import AddressError, address_from_name
from ...identity.certificate import (
    CertificateError,
    certificate_node_name,
    load_certificate,
    load_certificates,
    validity,
)
from ...revocation.crl import crl_url, crl_urls
from ..file_switch import recover_switch
from ..pledge.core import generate_key
from ..store import StoreError, load_identity, store_identity, write_atomic
from ..wellknown import ID_KP_CMC_RA
from .allocation import AllocationError, Allocator
from .domain_ca import NODE_LIFETIME, DomainCA, DomainCAError, PrivateKey
from .registrar_id import derived_registrar_id

LOG = logging.getLogger("acpd.brski.registrar")
CA_CERT_NAME = "domain-ca.crt"
CA_KEY_NAME = "domain-ca.key"
ALLOCATIONS_NAME = "allocations.db"
# The commit marker of a restore (backup.py): CA and database switched together.
RESTORE_MARKER = ".restore.switch"
# Re-issue our own LDevID once this share of its lifetime is left (the pledge's renewal point
# is at 40 % used); a registrar node runs no pledge part, so it renews itself (at start here,
# and while running in RegistrarPart).
REISSUE_REMAINING = 0.6


class RegistrarSetupError(ValueError):
    """The registrar's directory, CA or own LDevID is unusable; one line, for acpd to print."""


@dataclass
class RegistrarFiles:
    """The open domain CA and allocator of one registrar directory (close() the allocator)."""
    ca: DomainCA
    allocator: Allocator

    @property
    def own_serial(self) -> str:
        """The allocator key of the registrar's own LDevID (same as ensure_registrar_identity)."""
        return f"registrar-{self.allocator.registrar_id:012x}"

    def close(self) -> None:
        self.allocator.close()


def _prepare_dir(directory: Path) -> None:
    """Create `directory` 0700, or tighten an existing one to 0700 (it holds the CA key)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except FileExistsError:
        raise RegistrarSetupError(f"registrar_dir {directory} is not a directory") from None
    except OSError as exc:
        raise RegistrarSetupError(f"registrar_dir {directory}: "
                                  f"{exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RegistrarSetupError(f"registrar_dir {directory} is not a directory")
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        raise RegistrarSetupError(f"registrar_dir {directory} is not readable and writable")
    if stat.S_IMODE(info.st_mode) & 0o077:
        LOG.warning("registrar_dir %s was mode %o; now 0700", directory, stat.S_IMODE(info.st_mode))
        os.chmod(directory, 0o700)


def open_registrar_files(directory: Path, domain: str, ca_cert: Path | None = None,
                         ca_key: Path | None = None, *,
                         registrar_id: int | None = None) -> RegistrarFiles:
    """The domain CA (the operator's `ca_cert`/`ca_key`, else created in `directory` on
    first use) and the allocator of `directory` for `domain`. A new allocator takes
    `registrar_id` (the option), else the one derived from the CA's key; an existing one keeps
    its own and refuses a different `registrar_id`."""
    _prepare_dir(directory)
    try:  # a restore that crashed: its CA and database are installed wholly or not at all
        recover_switch(directory / RESTORE_MARKER, [directory / CA_CERT_NAME,
                                                    directory / CA_KEY_NAME,
                                                    directory / ALLOCATIONS_NAME])
    except OSError as exc:
        raise RegistrarSetupError(f"registrar_dir {directory}: unfinished restore: "
                                  f"{exc.strerror or exc}") from None
    try:
        if ca_cert is not None and ca_key is not None:
            ca = DomainCA.load_operator(ca_cert, ca_key, domain=domain)
        else:
            ca = DomainCA.load_or_create(directory / CA_CERT_NAME, directory / CA_KEY_NAME,
                                         domain=domain)
    except DomainCAError as exc:
        raise RegistrarSetupError(str(exc)) from None
    except OSError as exc:
        raise RegistrarSetupError(f"domain CA in {directory}: {exc.strerror or exc}") from None
    try:
        allocator = Allocator(directory / ALLOCATIONS_NAME, domain=domain,
                              registrar_id=registrar_id,
                              default_id=derived_registrar_id(ca.certificate))
    except (AllocationError, ValueError) as exc:
        raise RegistrarSetupError(f"allocations {directory / ALLOCATIONS_NAME}: {exc}") from None
    except Exception as exc:  # sqlite3.DatabaseError: a file that is not a database
        raise RegistrarSetupError(f"allocations {directory / ALLOCATIONS_NAME}: {exc}") from None
    return RegistrarFiles(ca, allocator)


def has_cmc_ra(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ObjectIdentifier(ID_KP_CMC_RA) in usages


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except Exception:  # InvalidSignature, ValueError (other issuer), TypeError (key type)
        return False


def reissue_reason(cert: x509.Certificate, now: dt.datetime) -> str | None:
    """Why our own (valid, consistent) LDevID should be replaced now, or None."""
    if not has_cmc_ra(cert):
        return "it lacks id-kp-cmcRA (MASAs refuse registrar voucher-requests without it)"
    if not crl_urls(cert):
        return "it names no CRL distribution point (RFC 8994 §6.2.5.3)"
    start, end = validity(cert)
    if now >= end:
        return f"it expired {end:%Y-%m-%d}"
    if (end - now) < (end - start) * REISSUE_REMAINING:
        return f"it expires {end:%Y-%m-%d}"
    return None


def check_existing(files: RegistrarFiles, cert_path: Path, key_path: Path,
                   domain: str) -> tuple[x509.Certificate, str | None] | None:
    """The registrar's existing LDevID and why to re-issue it (None: keep), or None if absent.

    RegistrarSetupError when it exists but belongs elsewhere (other domain, other CA, a
    foreign address of our Registrar-ID) or its key does not match."""
    if not cert_path.exists():
        return None
    try:
        cert = load_certificate(cert_path)
        found = certificate_node_name(cert)
    except (CertificateError, OSError) as exc:
        raise RegistrarSetupError(f"ldevid_cert {cert_path}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
    if found is None:
        raise RegistrarSetupError(f"ldevid_cert {cert_path} carries no acp-node-name")
    name = found[0]
    if name.domain.lower() != domain.lower():
        raise RegistrarSetupError(f"ldevid_cert {cert_path} is for ACP domain {name.domain}, "
                                  f"but registrar_domain is {domain}")
    if not _issued_by(cert, files.ca.certificate):
        raise RegistrarSetupError(f"ldevid_cert {cert_path} was not issued by the domain CA "
                                  f"{files.ca.cert_path} (a new registrar_dir?)")
    if load_identity(cert_path, key_path) is None:
        raise RegistrarSetupError(f"ldevid_key {key_path} is missing or not the key of "
                                  f"{cert_path}")
    if name.has_address:
        try:
            address = address_from_name(name)
        except AddressError as exc:
            raise RegistrarSetupError(f"ldevid_cert {cert_path}: {exc}") from None
        if address.registrar_id == files.allocator.registrar_id and \
                files.allocator.lookup_name(name.format()) is None:
            raise RegistrarSetupError(
                f"ldevid_cert {cert_path} holds {name.format()}, an address of this "
                f"Registrar-ID that {files.allocator.path} does not record (replaced database?)")
    return cert, reissue_reason(cert, dt.datetime.now(dt.UTC))


def issue_own_ldevid(files: RegistrarFiles, cert_path: Path, key_path: Path,
                     trust_anchors: Path, *, lifetime: dt.timedelta = NODE_LIFETIME,
                     ) -> tuple[x509.Certificate, PrivateKey]:
    """Allocate (or keep) the registrar's own name and write a fresh LDevID, key and anchors."""
    try:
        allocation = files.allocator.allocate(files.own_serial)
    except AllocationError as exc:
        raise RegistrarSetupError(str(exc)) from None
    key = generate_key()
    cert = files.ca.issue(key.public_key(), allocation.acp_node_name,
                          address=allocation.address.address, registrar=True,
                          lifetime=lifetime, crl_url=crl_url(allocation.address.address))
    try:
        store_identity(cert, key, list(files.ca.trust_anchors), cert_path=cert_path,
                       key_path=key_path, trust_anchors_path=trust_anchors)
    except StoreError as exc:
        raise StoreError(f"registrar LDevID: {exc}") from None
    return cert, key


def _check_anchors(trust_anchors: Path, ca: DomainCA) -> None:
    """Write the domain's trust anchors (root, then the CAs below it) when the file is missing;
    refuse a file without them (an operator's file is never overwritten)."""
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca.trust_anchors)
    if not trust_anchors.exists():
        LOG.warning("registrar: trust_anchors %s was missing; writing the domain CA", trust_anchors)
        write_atomic(trust_anchors, pem, 0o644)
        return
    try:
        held = load_certificates(trust_anchors)
    except (CertificateError, OSError) as exc:
        raise RegistrarSetupError(f"trust_anchors {trust_anchors}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
    missing = [c for c in ca.trust_anchors if c not in held]
    if missing:
        raise RegistrarSetupError(f"trust_anchors {trust_anchors} does not hold the domain CA "
                                  f"certificate {missing[0].subject.rfc4514_string()} "
                                  f"of {ca.cert_path}")


def bootstrap_registrar(config: Any, ldevid_cert: Path | None, ldevid_key: Path | None,
                        trust_anchors: Path | None) -> bool:
    """Make sure a registrar node has its domain CA and its own LDevID; True if one was written.

    Idempotent: a second call finds everything in place and writes nothing. Raises
    RegistrarSetupError (ValueError) or OSError with a one-line message."""
    domain = getattr(config, "registrar_domain", None)
    if not domain:
        raise RegistrarSetupError("a registrar needs option registrar_domain")
    if ldevid_cert is None or ldevid_key is None or trust_anchors is None:
        raise RegistrarSetupError("a registrar needs ldevid_cert, ldevid_key and trust_anchors "
                                  "paths to write its own identity to")
    cert_path, key_path, anchors_path = Path(ldevid_cert), Path(ldevid_key), Path(trust_anchors)
    files = open_registrar_files(Path(config.registrar_dir), domain,
                                 getattr(config, "registrar_ca_cert", None),
                                 getattr(config, "registrar_ca_key", None),
                                 registrar_id=getattr(config, "registrar_id", None))
    try:
        existing = check_existing(files, cert_path, key_path, domain)
        if existing is not None and existing[1] is None:
            _check_anchors(anchors_path, files.ca)
            return False
        if existing is not None:
            LOG.info("registrar: re-issuing this node's LDevID: %s", existing[1])
        cert, _key = issue_own_ldevid(files, cert_path, key_path, anchors_path)
        LOG.info("registrar: issued own LDevID %s (%s)", cert_path,
                 cert.subject.rfc4514_string())
        return True
    finally:
        files.close()

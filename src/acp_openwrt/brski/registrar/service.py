"""The registrar's cryptographic side, as the registrar worker runs it (worker.py).

Everything here needs cryptography, OpenSSL (ssl) or sqlite3: the domain CA and
allocations.db (`open_registrar_files`), the node's LDevID checked against the CA, the TLS
server context, the Registrar's handlers (CMS vouchers, CSRs, certificate signing, the MASA's
TLS), revocations and the signed CRL, and the renewal of the registrar's own LDevID. acpd
imports none of it (issue 19): its RegistrarPart (part.py) keeps the listening sockets, the
GRASP flooding and the status, and runs this in a child.

The CRL is signed here and written to `crl_path(registrar_dir)` (DER, replaced in one
rename), which acpd serves over HTTP as bytes; `state()` is the summary acpd's status shows.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...identity.certificate import find_acp_node_name, validity
from ...logsafe import logsafe
from ...revocation.crl import crl_url
from ..http import Request, Response
from ..store import load_identity, write_atomic
from ..tls import chain_problem
from .bootstrap import (
    REISSUE_REMAINING,
    RegistrarFiles,
    RegistrarSetupError,
    has_cmc_ra,
    issue_own_ldevid,
    open_registrar_files,
    reissue_reason,
)
from .core import Now, Registrar
from .domain_ca import PrivateKey
from .revocation import CrlPublisher, RevocationError, RevocationStore, revoked_view
from .worker_protocol import crl_path

LOG = logging.getLogger("acpd.brski.registrar")
MAX_REFUSALS = 16


class RecordingRegistrar(Registrar):
    """The registrar, keeping its last refusals for `acpctl registrar` (logs alone scroll by).
    `on_answer`, when set, is called once each request's answer is decided and before it is
    written: the worker reports its state to acpd there, so that a pledge (or an operator's
    test) that has read the answer finds it in acpd's status."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusals: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_REFUSALS)
        self.on_answer: Callable[[], None] | None = None

    async def handle(self, request: Request, writer: asyncio.StreamWriter, *,
                     now: Now) -> Response:
        response = await super().handle(request, writer, now=now)
        if self.on_answer is not None:
            self.on_answer()
        return response

    def replace_identity(self, cert: x509.Certificate, key: PrivateKey) -> None:
        """Use a renewed certificate from now on (also as the proximity-registrar-cert)."""
        self.cert, self.key = cert, key
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)

    def _refuse(self, status: int, who: str, reason: str) -> Response:
        self.refusals.append({"time": round(time.time(), 1), "who": logsafe(who),
                              "status": status, "reason": logsafe(reason, 300)})
        return super()._refuse(status, who, reason)


def masa_client_context(cert_path: Path, key_path: Path,
                        manufacturer_anchor: Path | None) -> ssl.SSLContext:
    """TLS towards MASAs: system CAs + the manufacturer anchor, host name checked, LDevID shown."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if manufacturer_anchor is not None:
        context.load_verify_locations(cafile=os.fspath(manufacturer_anchor))
    context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    return context


class RegistrarService:
    """Domain CA, allocator, revocations, our LDevID and the Registrar of one node.

    `config` is an AcpConfig (the worker rebuilds one from what acpd passes), `address` the
    node's ACP address (the CRL distribution point's host)."""

    def __init__(self, config: Any, address: str, *, masa_namespace: str | None = None) -> None:
        self.config, self.address, self.masa_namespace = config, address, masa_namespace
        self.files: RegistrarFiles | None = None
        self.registrar: RecordingRegistrar | None = None
        self.revocation: RevocationStore | None = None
        self.crl: CrlPublisher | None = None
        self.context: ssl.SSLContext | None = None
        self.warnings: list[str] = []

    @property
    def crl_url(self) -> str:
        return crl_url(self.address)

    def open(self) -> None:
        """RegistrarSetupError (or OSError, ValueError) with one line when it cannot serve;
        nothing stays open then."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        config = self.config
        if not config.registrar_domain:
            raise RegistrarSetupError("option registrar_domain is not set")
        if config.ldevid_cert is None or config.ldevid_key is None:
            raise RegistrarSetupError("ldevid_cert and ldevid_key are not set")
        self.files = open_registrar_files(Path(config.registrar_dir), config.registrar_domain,
                                          config.registrar_ca_cert, config.registrar_ca_key,
                                          registrar_id=config.registrar_id)
        found = load_identity(config.ldevid_cert, config.ldevid_key)
        if found is None:
            raise RegistrarSetupError(f"cannot load the LDevID {config.ldevid_cert} with its key")
        cert, key = found
        problem = chain_problem(cert, self.files.ca.certificate)
        if problem is not None:
            raise RegistrarSetupError(f"the LDevID does not chain to the domain CA: {problem}")
        if not has_cmc_ra(cert):
            self.warnings.append("the LDevID lacks id-kp-cmcRA: MASAs will refuse vouchers "
                                 "(restart acpd to have it re-issued)")
        if not config.manufacturer_trust_anchor:
            self.warnings.append("no manufacturer_trust_anchor: pledges' IDevIDs cannot be "
                                 "verified, only LDevID renewal is served")
        self.revocation = RevocationStore(self.files.allocator.path)
        self.crl = CrlPublisher(self.files.ca, self.revocation)
        self.registrar = RecordingRegistrar(
            self.files.ca, self.files.allocator, cert, key,
            masa_context=masa_client_context(config.ldevid_cert, config.ldevid_key,
                                             config.manufacturer_trust_anchor),
            default_masa_url=config.registrar_masa_url, masa_namespace=self.masa_namespace,
            revocation=self.revocation, crl_url=self.crl_url)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS server context (built once): our LDevID; IDevIDs or LDevIDs as clients."""
        assert self.registrar is not None
        if self.context is None:
            anchors = [self.config.manufacturer_trust_anchor] \
                if self.config.manufacturer_trust_anchor else []
            self.context = self.registrar.ssl_context(self.config.ldevid_cert,
                                                      self.config.ldevid_key, anchors)
        return self.context

    def close(self) -> None:
        if self.revocation is not None:
            self.revocation.close()
            self.revocation = self.crl = None
        if self.files is not None:
            self.files.close()
            self.files = None

    # -- revocation -----------------------------------------------------------------------
    def publish_crl(self, now: dt.datetime | None = None) -> bytes:
        """Sign the CRL now if a revocation was added or it is half-way through its validity
        (CrlPublisher decides), and write it where acpd serves it from."""
        assert self.crl is not None
        der = self.crl.current(now or dt.datetime.now(dt.UTC))
        path = crl_path(Path(self.config.registrar_dir))
        try:
            if path.read_bytes() == der:
                return der
        except OSError:
            pass
        write_atomic(path, der, 0o644)
        return der

    def revoke(self, target: str, reason: str = "",
               now: dt.datetime | None = None) -> dict[str, Any]:
        """Revoke an acp-node-name or a serial (RevocationError: unknown); the CRL is signed
        and written at once (nodes learn it within their refresh interval)."""
        assert self.revocation is not None and self.crl is not None
        now = now or dt.datetime.now(dt.UTC)
        added = self.revocation.revoke(target, now, reason)
        for entry in added:
            LOG.warning("registrar: revoked certificate %s of %s: %s", entry.serial,
                        entry.acp_node_name or "(unknown name)", entry.reason)
        self.publish_crl(now)
        return {"target": target, "revoked": [r.as_dict() for r in added],
                "crl_number": self.crl.number}

    def revoked_view(self) -> dict[str, Any]:
        assert self.revocation is not None and self.crl is not None
        return {"crl_url": self.crl_url, **revoked_view(self.revocation),
                "crl_number": self.crl.number}

    # -- our own LDevID -------------------------------------------------------------------
    def renew_at(self) -> float:
        """When our LDevID is due for re-issue (Unix seconds; now if it is already)."""
        assert self.registrar is not None
        now = dt.datetime.now(dt.UTC)
        if reissue_reason(self.registrar.cert, now) is not None:
            return now.timestamp()
        start, end = validity(self.registrar.cert)
        return (end - (end - start) * REISSUE_REMAINING).timestamp()

    def renew_if_due(self, now: dt.datetime | None = None) -> bool:
        """Re-issue our own LDevID in place when due: new TLS handshakes and MASA requests use
        it at once (acpd then tells its other parts: IdentityChanged). RegistrarSetupError,
        OSError, ValueError or ssl.SSLError when it was due and failed."""
        assert self.registrar is not None and self.files is not None
        reason = reissue_reason(self.registrar.cert, now or dt.datetime.now(dt.UTC))
        if reason is None:
            return False
        config = self.config
        if config.trust_anchors is None:
            raise RegistrarSetupError("trust_anchors is not set")
        cert, key = issue_own_ldevid(self.files, Path(config.ldevid_cert),
                                     Path(config.ldevid_key), Path(config.trust_anchors))
        for context in (self.context, self.registrar.masa_context):
            if context is not None:
                context.load_cert_chain(config.ldevid_cert, config.ldevid_key)
        self.registrar.replace_identity(cert, key)
        LOG.info("registrar: renewed this node's LDevID (%s)", reason)
        return True

    # -- what acpd shows ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The summary acpd keeps and shows (JSON-ready)."""
        assert self.registrar is not None and self.files is not None
        assert self.revocation is not None and self.crl is not None
        inner = self.registrar.status()
        allocator = self.files.allocator
        found = find_acp_node_name(self.registrar.cert)
        own = allocator.lookup_name(found.text if found else "")
        crl_status = self.crl.status()
        return {"acp_node_name": inner["acp_node_name"], "registrar_id": inner["registrar_id"],
                "domain_ca": inner["domain_ca"], "allocations": inner["allocations"],
                "enrolled": allocator.count() - (1 if own is not None else 0),
                "counters": inner["counters"], "recent_status": inner["recent_status"],
                "recent_refusals": list(self.registrar.refusals),
                "crl_number": self.crl.number, "crl_built": crl_status["crl_built"],
                "revoked": len(self.revocation.revoked()), "renew_at": self.renew_at(),
                "warnings": list(self.warnings)}


__all__ = ("RecordingRegistrar", "RegistrarService", "RevocationError", "masa_client_context")

"""acpd's registrar part (option `registrar 1`): BRSKI and EST in the ACP, announced by GRASP.

The server listens on `[::]:registrar_port` inside the ACP namespace with the node's LDevID
(issued by `bootstrap_registrar` before acpd loaded it) as TLS certificate; pledges reach it
through join proxies, enrolled nodes across the ACP for renewal. It announces itself with
AN_join_registrar floods (RFC 8995 §4.3) through the ACP GRASP port (`ctx.acp_grasp`) every
60 s (ttl 180 s) and on every new ACP GRASP interface (`AcpGraspInterfaceUp`), and publishes
`RegistrarHeard` for the join proxy of its own node, since a node never receives its own floods.

The MASA is on the Internet, which the ACP does not reach (it routes only the ACP ULA prefix),
so voucher-requests leave from acpd's own namespace (the data plane) by default;
`masa_namespace` changes that. The MASA's TLS certificate is checked against the system CAs
plus `manufacturer_trust_anchor` (a vendor's MASA is commonly under its own CA), with its host
name, and the registrar presents its LDevID as client certificate (RFC 8995 §5.4.1).
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ... import netns
from ...control.server import RequestError
from ...events import AcpGraspInterfaceUp, IdentityChanged, RegistrarHeard
from ...grasp import constants as gc
from ...grasp.asa_api import Asa, AsaApi
from ...grasp.errors import GraspApiError
from ...grasp.messages import Locator, Objective, TaggedObjective
from ...logsafe import logsafe
from ...node_context import NodeContext, Part
from ...revocation.crl import CRL_PORT, crl_url
from ..http import Response
from ..proxy.registrars import AN_JOIN_REGISTRAR, EST_TLS
from ..store import load_identity
from ..tls import chain_problem
from .bootstrap import (  # noqa: F401  (bootstrap_registrar: acpd imports it here)
    RegistrarFiles,
    RegistrarSetupError,
    bootstrap_registrar,
    has_cmc_ra,
    issue_own_ldevid,
    open_registrar_files,
    reissue_reason,
)
from .core import Registrar
from .domain_ca import PrivateKey
from .registrar_id import conflict, format_registrar_id, registrar_id_of
from .revocation import CrlPublisher, RevocationError, RevocationStore, revoked_view, serve_crl

LOG = logging.getLogger("acpd.brski.registrar")
FLOOD_INTERVAL = 60.0     # s; RFC 8995 §4.3 default (and minimum)
FLOOD_TTL_MS = 180_000    # 3 periods: one lost flood does not make proxies forget us
AN_JOIN_REGISTRAR_LOOP_COUNT = 255
ASA_NAME = "acpd-registrar"
MAX_REFUSALS = 16
LISTEN_BACKLOG = 64
RENEW_RETRY = 3600.0      # s after a failed self-renewal (a full disk must not spam the log)


def registrar_objective() -> Objective:
    """`["AN_join_registrar", F_SYNCH, 255, "EST-TLS"]` (RFC 8995 §4.3, ACP digest)."""
    return Objective(AN_JOIN_REGISTRAR, gc.F_SYNCH, AN_JOIN_REGISTRAR_LOOP_COUNT, EST_TLS)


def registrar_locator(address: str, port: int) -> Locator:
    """The TCP O_IPv6_LOCATOR of the registrar's ACP address (join proxies connect to it)."""
    import ipaddress
    return Locator(gc.O_IPv6_LOCATOR, ipaddress.IPv6Address(address).packed, gc.IPPROTO_TCP,
                   port)


def flood_items(address: str, port: int) -> list[TaggedObjective]:
    return [TaggedObjective(registrar_objective(), registrar_locator(address, port))]


class RecordingRegistrar(Registrar):
    """The registrar, keeping its last refusals for `acpctl registrar` (logs alone scroll by)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusals: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_REFUSALS)

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


class RegistrarPart(Part):
    """The acpd part (control command `registrar`)."""
    name = "registrar"

    def __init__(self, ctx: NodeContext, *, masa_namespace: str | None = None,
                 flood_interval: float = FLOOD_INTERVAL, flood_ttl_ms: int = FLOOD_TTL_MS,
                 crl_port: int = CRL_PORT) -> None:
        self.ctx = ctx
        self.masa_namespace = masa_namespace
        self.flood_interval, self.flood_ttl_ms = flood_interval, flood_ttl_ms
        self.registrar: RecordingRegistrar | None = None
        self.files: RegistrarFiles | None = None
        self.port: int | None = None
        self.address: str | None = None
        self.problem: str | None = None
        self.floods_sent = 0
        self.last_flood: float | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flooder: asyncio.Task[None] | None = None
        self._unsub_new_interface: Callable[[], None] | None = None
        self._grasp: AsaApi | None = None
        self._asa: Asa | None = None
        self._warned_no_grasp = False
        self._context: ssl.SSLContext | None = None
        self._renew_after = 0.0
        self.renewals = 0
        self.crl_port = crl_port
        self.revocation: RevocationStore | None = None
        self.crl: CrlPublisher | None = None
        self._crl_server: asyncio.base_events.Server | None = None
        self.others: dict[str, dict[str, Any]] = {}  # other registrars heard, by address
        self.conflict: str | None = None
        ctx.bus.subscribe(RegistrarHeard, self._on_registrar_heard)
        ctx.control.register("registrar", lambda _request: self.status())
        ctx.control.register("revoke", self._cmd_revoke)
        ctx.control.register("revoked", lambda _request: self.revoked_view())

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._open()
        except (RegistrarSetupError, OSError, ValueError) as exc:
            self.problem = str(exc)
            LOG.error("registrar not started: %s", exc)
            self._close_files()
            return
        assert self.registrar is not None and self.address is not None
        config = self.ctx.config
        anchors = [config.manufacturer_trust_anchor] if config.manufacturer_trust_anchor else []
        if not anchors:
            LOG.warning("registrar: no manufacturer_trust_anchor: pledges' IDevIDs cannot be "
                        "verified, only LDevID renewal is served")
        cert_path, key_path = self._ldevid_paths()  # _open() checked they are set
        context = self._context = self.registrar.ssl_context(cert_path, key_path, anchors)
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(None, self._bind_in_acp, config.registrar_port)
            self._server = await self.registrar.serve(context, sock=sock)
        except OSError as exc:
            self.problem = f"cannot listen on [::]:{config.registrar_port} in " \
                           f"{self.ctx.acp_ns}: {exc.strerror or exc}"
            LOG.error("registrar not started: %s", self.problem)
            self._close_files()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        await self._serve_crl()
        LOG.info("registrar for %s on [%s]:%d (ACP namespace %s)", config.registrar_domain,
                 self.address, self.port, self.ctx.acp_ns)
        self._start_flooding()
        self._flooder = loop.create_task(self._flood_loop())

    async def stop(self) -> None:
        if self._unsub_new_interface is not None:
            self._unsub_new_interface()
            self._unsub_new_interface = None
        if self._flooder is not None:
            self._flooder.cancel()
            await asyncio.gather(self._flooder, return_exceptions=True)
            self._flooder = None
        if self.address and self.port:  # withdraw at once from our own join proxy
            self.ctx.bus.publish(RegistrarHeard(self.address, self.port, 0))
        if self._grasp is not None and self._asa is not None:
            try:
                self._grasp.deregister_asa(self._asa)
            except GraspApiError as exc:
                LOG.debug("registrar ASA already gone: %s", exc)
        self._grasp = self._asa = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._crl_server is not None:
            self._crl_server.close()
            await self._crl_server.wait_closed()
            self._crl_server = None
        self._close_files()

    def _ldevid_paths(self) -> tuple[Path, Path]:
        config = self.ctx.config
        if config.ldevid_cert is None or config.ldevid_key is None:
            raise RegistrarSetupError("ldevid_cert and ldevid_key are not set")
        return config.ldevid_cert, config.ldevid_key

    def _close_files(self) -> None:
        if self.revocation is not None:
            self.revocation.close()
            self.revocation = self.crl = None
        if self.files is not None:
            self.files.close()
            self.files = None

    def _open(self) -> None:
        """Domain CA, allocator, our LDevID (checked against the CA) and the Registrar."""
        config, identity = self.ctx.config, self.ctx.identity
        if not config.registrar_domain:
            raise RegistrarSetupError("option registrar_domain is not set")
        if identity is None or not identity.get("acp_address"):
            raise RegistrarSetupError("the node has no LDevID with an ACP address "
                                      "(bootstrap_registrar did not run?)")
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
            LOG.warning("registrar: the LDevID lacks id-kp-cmcRA: MASAs will refuse vouchers "
                        "(restart acpd to have it re-issued)")
        self.address = identity["acp_address"]
        self.revocation = RevocationStore(self.files.allocator.path)
        self.crl = CrlPublisher(self.files.ca, self.revocation)
        self.registrar = RecordingRegistrar(
            self.files.ca, self.files.allocator, cert, key,
            masa_context=masa_client_context(config.ldevid_cert, config.ldevid_key,
                                             config.manufacturer_trust_anchor),
            default_masa_url=config.registrar_masa_url, masa_namespace=self.masa_namespace,
            revocation=self.revocation, crl_url=self.crl_url)

    @property
    def crl_url(self) -> str | None:
        """The CRL distribution point written into every certificate issued here."""
        return None if self.address is None else crl_url(self.address)

    # -- revocation (RFC 8994 §6.2.5.3) ---------------------------------------------------
    async def _serve_crl(self) -> None:
        """GET http://[<our ACP address>]/acp.crl in the ACP namespace; a failure is logged
        (nodes then keep their last good CRL), the registrar keeps running."""
        if self.crl is None:
            return
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(None, self._bind_in_acp, self.crl_port)
            self._crl_server = await serve_crl(self.crl, sock=sock)
        except OSError as exc:
            LOG.error("registrar: cannot serve the CRL on [::]:%d in %s: %s", self.crl_port,
                      self.ctx.acp_ns, exc.strerror or exc)
            return
        LOG.info("registrar: CRL at %s", self.crl_url)

    def revoke(self, target: str, reason: str = "",
               now: dt.datetime | None = None) -> dict[str, Any]:
        """Revoke an acp-node-name or a serial (RevocationError: unknown); the CRL served next
        lists it (nodes learn it within their refresh interval)."""
        if self.revocation is None or self.crl is None:
            raise RequestError("the registrar is not running")
        try:
            added = self.revocation.revoke(target, now or dt.datetime.now(dt.UTC), reason)
        except RevocationError as exc:
            raise RequestError(str(exc)) from None
        for entry in added:
            LOG.warning("registrar: revoked certificate %s of %s: %s", entry.serial,
                        entry.acp_node_name or "(unknown name)", entry.reason)
        self.crl.current(now or dt.datetime.now(dt.UTC))   # rebuilt now, not at the next fetch
        return {"target": target, "revoked": [r.as_dict() for r in added],
                "crl_number": self.crl.number}

    async def _cmd_revoke(self, request: dict[str, Any]) -> dict[str, Any]:
        target = request.get("target")
        if not isinstance(target, str) or not target.strip():
            raise RequestError("revoke needs target: an acp-node-name or a certificate serial")
        reason = request.get("reason")
        return self.revoke(target.strip(), reason if isinstance(reason, str) else "")

    def revoked_view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"crl_url": self.crl_url, "crl_number": None, "revoked": [],
                               "revoked_names": []}
        if self.revocation is not None and self.crl is not None:
            out.update(revoked_view(self.revocation), crl_number=self.crl.number)
        return out

    def _bind_in_acp(self, port: int) -> socket.socket:
        sock = netns.socket_in(self.ctx.acp_ns, socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- announcing -----------------------------------------------------------------------
    def _start_flooding(self) -> None:
        port = self.ctx.acp_grasp
        grasp = port.asa_api() if port is not None else None
        if grasp is None:
            if not self._warned_no_grasp:
                LOG.warning("registrar: no ACP GRASP instance: AN_join_registrar is not flooded "
                            "(only the local join proxy learns of this registrar)")
                self._warned_no_grasp = True
            return
        assert self.address is not None and self.port is not None
        try:
            asa = grasp.register_asa(ASA_NAME)
            grasp.register_objective(asa, registrar_objective(), ttl_ms=self.flood_ttl_ms,
                                     discoverable=True,
                                     locators=[registrar_locator(self.address, self.port)])
        except GraspApiError as exc:
            LOG.error("registrar: cannot register with ACP GRASP (%s): not flooding", exc)
            return
        self._grasp, self._asa = grasp, asa
        self._unsub_new_interface = self.ctx.bus.subscribe(
            AcpGraspInterfaceUp, lambda _event: self.announce())

    def announce(self) -> None:
        """One AN_join_registrar flood, and the news to our own join proxy."""
        assert self.address is not None and self.port is not None
        if self._grasp is not None and self._asa is not None:
            try:
                self._grasp.flood(self._asa, self.flood_ttl_ms,
                                  flood_items(self.address, self.port))
                self.floods_sent += 1
                self.last_flood = time.time()
            except (GraspApiError, OSError) as exc:
                LOG.warning("registrar: AN_join_registrar flood failed: %s", exc)
        self.ctx.bus.publish(RegistrarHeard(self.address, self.port, self.flood_ttl_ms))

    async def _flood_loop(self) -> None:
        while True:
            try:
                self.announce()
            except Exception:  # a failing neighbour part must not end the announcements
                LOG.exception("registrar: announcing failed")
            self.renew_if_due()
            await asyncio.sleep(self.flood_interval)

    # -- other registrars (RFC 8994 §6.11.7) ----------------------------------------------
    def _on_registrar_heard(self, event: RegistrarHeard) -> None:
        """Another registrar of the ACP announced itself: remember it, and stop allocating
        new addresses if it has our Registrar-ID (both would hand out the same ones)."""
        if self.address is None or self.files is None:
            return
        try:
            if ipaddress.IPv6Address(event.address) == ipaddress.IPv6Address(self.address):
                return
        except ValueError:
            return
        if event.ttl_ms <= 0:
            self.others.pop(event.address, None)
            return
        other = registrar_id_of(event.address)
        self.others[event.address] = {
            "address": event.address, "port": event.port, "last_heard": round(time.time(), 1),
            "registrar_id": None if other is None else format_registrar_id(other)}
        problem = conflict(self.files.allocator.registrar_id, self.address, event.address)
        if problem is not None and self.conflict is None:
            self.conflict = problem
            LOG.error("registrar: %s; new pledges are refused until acpd restarts", problem)
            if self.registrar is not None:
                self.registrar.refuse_new = problem

    # -- our own LDevID -------------------------------------------------------------------
    def renew_if_due(self, now: dt.datetime | None = None) -> bool:
        """Re-issue our own LDevID in place when due: new TLS handshakes and MASA requests use
        it at once, and IdentityChanged tells the other parts (the name stays the same)."""
        if self.registrar is None or self.files is None or time.monotonic() < self._renew_after:
            return False
        reason = reissue_reason(self.registrar.cert, now or dt.datetime.now(dt.UTC))
        if reason is None:
            return False
        config = self.ctx.config
        try:
            cert_path, key_path = self._ldevid_paths()
            if config.trust_anchors is None:
                raise RegistrarSetupError("trust_anchors is not set")
            cert, key = issue_own_ldevid(self.files, cert_path, key_path, config.trust_anchors)
            for context in (self._context, self.registrar.masa_context):
                if context is not None:
                    context.load_cert_chain(cert_path, key_path)
        except (OSError, ValueError, ssl.SSLError, RegistrarSetupError) as exc:
            LOG.error("registrar: renewing this node's LDevID (%s) failed: %s", reason, exc)
            self._renew_after = time.monotonic() + RENEW_RETRY
            return False
        self.registrar.replace_identity(cert, key)
        self.renewals += 1
        LOG.info("registrar: renewed this node's LDevID (%s)", reason)
        self.ctx.bus.publish(IdentityChanged(str(config.ldevid_cert), str(config.ldevid_key),
                                             str(config.trust_anchors)))
        return True

    # -- views ----------------------------------------------------------------------------
    def _enrolled(self) -> int | None:
        if self.files is None or self.registrar is None:
            return None
        allocator = self.files.allocator
        own = allocator.lookup_name(_node_name(self.registrar.cert) or "")
        return allocator.count() - (1 if own is not None else 0)

    def status(self) -> dict[str, Any]:
        config = self.ctx.config
        out: dict[str, Any] = {
            "running": self._server is not None, "domain": config.registrar_domain,
            "address": self.address, "port": self.port, "namespace": self.ctx.acp_ns,
            "problem": self.problem, "default_masa_url": config.registrar_masa_url,
            "masa_namespace": self.masa_namespace, "flooding": self._grasp is not None,
            "floods_sent": self.floods_sent, "own_renewals": self.renewals,
            "last_flood_age": None if self.last_flood is None
            else round(time.time() - self.last_flood, 1),
            "enrolled": self._enrolled(), "recent_refusals": [],
            "crl_url": self.crl_url if self._crl_server is not None else None,
            "crl_number": self.crl.number if self.crl is not None else None,
            "revoked": len(self.revocation.revoked()) if self.revocation is not None else 0,
            "other_registrars": sorted(self.others.values(), key=lambda o: o["address"]),
            "registrar_id_conflict": self.conflict,
            "ldevid": str(config.ldevid_cert) if config.ldevid_cert else None,
            "ldevid_key": str(config.ldevid_key) if config.ldevid_key else None}
        if self.registrar is not None and self.files is not None:
            inner = self.registrar.status()
            out.update(acp_node_name=inner["acp_node_name"], registrar_id=inner["registrar_id"],
                       domain_ca=inner["domain_ca"], allocations=inner["allocations"],
                       counters=inner["counters"], recent_status=inner["recent_status"],
                       recent_refusals=list(self.registrar.refusals)[-8:])
        return out


def _node_name(cert: x509.Certificate) -> str | None:
    from ...identity.certificate import find_acp_node_name
    found = find_acp_node_name(cert)
    return found.text if found else None

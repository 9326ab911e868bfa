"""acpd's registrar part (option `registrar 1`): BRSKI and EST in the ACP, announced by GRASP.

The server listens on `[::]:registrar_port` inside the ACP namespace with the node's LDevID
(issued by `bootstrap_registrar` before acpd loaded it) as TLS certificate; pledges reach it
through join proxies, enrolled nodes across the ACP for renewal. It announces itself with
AN_join_registrar floods (RFC 8995 §4.3) through the ACP GRASP port (`ctx.acp_grasp`) every
60 s (ttl 180 s) and on every new ACP GRASP interface (`AcpGraspInterfaceUp`), and publishes
`RegistrarHeard` for the join proxy of its own node, since a node never receives its own floods.

Two processes (issue 19: acpd stays without cryptography, OpenSSL and sqlite). This part, in
acpd, holds the listening sockets (the registrar port and the CRL's HTTP port, bound in the
ACP namespace), the flooding, the status and the control commands. It accepts registrar
connections as plain TCP and hands each one that sends data to the registrar worker
(worker.py, started on demand by supervisor.py, gone after IDLE_EXIT s idle), which
does TLS, CMS, CSRs, certificate signing, the MASA's TLS and allocations.db. A connection
closed without data is a join proxy's probe (proxy/process.py tcp_probe): counted, never a
session, but it starts the worker ahead of the pledges that proxy is about to relay. At start
the first worker (`start`) checks the CA, our LDevID against it and id-kp-cmcRA and signs
the CRL (a refusal is this part's `problem`), then stays on to serve. acpd serves the CRL
from the file the worker signed (crl_http.CrlFile) and asks a worker to sign anew on `revoke`
and once half its validity has passed; the registrar's own LDevID renewal is a worker request too.

The MASA is on the Internet, which the ACP does not reach (it routes only the ACP ULA prefix),
so voucher-requests leave from acpd's own namespace (the data plane, which the worker
inherits) by default; `masa_namespace` changes that. The MASA's TLS certificate is checked
against the system CAs plus `manufacturer_trust_anchor` (a vendor's MASA is commonly under its
own CA), with its host name, and the registrar presents its LDevID as client certificate
(RFC 8995 §5.4.1).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import netns
from ...control.server import RequestError
from ...events import AcpGraspInterfaceUp, IdentityChanged, PledgeSolicited, RegistrarHeard
from ...grasp import constants as gc
from ...grasp.asa_api import Asa, AsaApi
from ...grasp.errors import GraspApiError
from ...grasp.messages import Locator, Objective, TaggedObjective
from ...logsafe import logsafe
from ...node_context import NodeContext, Part
from ...revocation.crl import CRL_PORT, DEFAULT_VALIDITY, crl_url
from ..proxy.registrars import AN_JOIN_REGISTRAR, EST_TLS
from .crl_http import CrlFile, serve_crl
from .registrar_id import conflict, format_registrar_id, registrar_id_of
from .supervisor import RegistrarWorker, WorkerError, WorkerReports
from .worker_protocol import IDLE_EXIT, crl_path, settings_of

LOG = logging.getLogger("acpd.brski.registrar")
FLOOD_INTERVAL = 60.0     # s; RFC 8995 §4.3 default (and minimum)
FLOOD_TTL_MS = 180_000    # 3 periods: one lost flood does not make proxies forget us
AN_JOIN_REGISTRAR_LOOP_COUNT = 255
ASA_NAME = "acpd-registrar"
LISTEN_BACKLOG = 64
RENEW_RETRY = 3600.0      # s after a failed self-renewal (a full disk must not spam the log)
CRL_RESIGN = DEFAULT_VALIDITY.total_seconds() / 2  # s: CrlPublisher's own rebuild point
FIRST_DATA_TIMEOUT = 10.0  # s an accepted connection may stay silent (a TLS client speaks first)
MAX_PENDING = 64          # accepted connections waiting for their first bytes


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


class RegistrarPart(Part):
    """The acpd part (control commands `registrar`, `revoke`, `revoked`)."""
    name = "registrar"

    def __init__(self, ctx: NodeContext, *, masa_namespace: str | None = None,
                 flood_interval: float = FLOOD_INTERVAL, flood_ttl_ms: int = FLOOD_TTL_MS,
                 crl_port: int = CRL_PORT, idle_exit: float = IDLE_EXIT) -> None:
        self.ctx = ctx
        self.idle_exit = idle_exit
        self.masa_namespace = masa_namespace
        self.flood_interval, self.flood_ttl_ms = flood_interval, flood_ttl_ms
        self.worker: RegistrarWorker | None = None
        self.port: int | None = None
        self.address: str | None = None
        self.problem: str | None = None
        self.floods_sent = 0
        self.last_flood: float | None = None
        self.probes = 0
        self._listener: socket.socket | None = None
        self._accepter: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flooder: asyncio.Task[None] | None = None
        self._unsub_new_interface: Callable[[], None] | None = None
        self._grasp: AsaApi | None = None
        self._asa: Asa | None = None
        self._warned_no_grasp = False
        self._renew_after = 0.0
        self._crl_after = 0.0
        self.renewals = 0
        self.crl_port = crl_port
        self.crl: CrlFile | None = None
        self._crl_server: asyncio.base_events.Server | None = None
        self.reports = WorkerReports()   # what the workers reported
        self._first: asyncio.Task[tuple[RegistrarWorker, bool, str]] | None = None  # prepare()
        self.others: dict[str, dict[str, Any]] = {}  # other registrars heard, by address
        self.conflict: str | None = None
        ctx.bus.subscribe(RegistrarHeard, self._on_registrar_heard)
        ctx.bus.subscribe(PledgeSolicited, self._on_pledge_solicited)
        ctx.control.register("registrar", lambda _request: self.status())
        ctx.control.register("revoke", self._cmd_revoke)
        ctx.control.register("revoked", self._cmd_revoked)

    # -- life -----------------------------------------------------------------------------
    def _settings(self) -> str:
        """The registrar worker's settings (RegistrarSetupError-like ValueError: not usable)."""
        config, identity = self.ctx.config, self.ctx.identity
        if not config.registrar_domain:
            raise ValueError("option registrar_domain is not set")
        if identity is None or not identity.get("acp_address"):
            raise ValueError("the node has no LDevID with an ACP address "
                             "(bootstrap_registrar did not run?)")
        if config.ldevid_cert is None or config.ldevid_key is None:
            raise ValueError("ldevid_cert and ldevid_key are not set")
        return settings_of(config, identity["acp_address"], self.masa_namespace, self.idle_exit)

    def prepare(self) -> None:
        """The first worker's start (an interpreter, cryptography, the CA: seconds on a small
        box or under TCG, where it held a registrar's first pledge 4.5 s) overlaps the starts
        of the parts before this one; start() waits for it."""
        if self._first is not None:
            return
        try:
            settings = self._settings()
        except ValueError:
            return   # start() says why
        worker = RegistrarWorker(settings, self.reports.on_state)
        self._first = asyncio.get_running_loop().create_task(self._start_first(worker),
                                                             name="registrar-worker-start")

    async def _start_first(self, worker: RegistrarWorker) -> tuple[RegistrarWorker, bool, str]:
        # One worker checks what the registrar needs (CA, allocations.db, our LDevID against
        # the CA, the CRL signed) and stays on to serve the first pledges (worker.py `start`).
        try:
            ok, out = await worker.start_checked()
        except BaseException:
            await worker.stop()
            raise
        return worker, ok, out

    async def start(self) -> None:
        try:
            self._settings()
        except ValueError as exc:
            self._not_started(str(exc))
            return
        self.prepare()   # when it was not called (a part started on its own)
        first, self._first = self._first, None
        assert first is not None
        worker, ok, out = await first
        if not ok:
            await worker.stop()
            self._not_started(out)
            return
        if self.conflict is not None:   # heard while the worker started
            await worker.set_refuse_new(self.conflict)
        for warning in self.reports.summary.get("warnings") or []:
            LOG.warning("registrar: %s", logsafe(str(warning)))
        identity = self.ctx.identity
        assert identity is not None
        self.address = identity["acp_address"]
        config = self.ctx.config
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.run_in_executor(None, self._bind_in_acp,
                                                        config.registrar_port)
        except OSError as exc:
            await worker.stop()
            self._not_started(f"cannot listen on [::]:{config.registrar_port} in "
                              f"{self.ctx.acp_ns}: {exc.strerror or exc}")
            return
        self.problem = None
        self.worker = worker
        self.port = self._listener.getsockname()[1]
        self._accepter = loop.create_task(self._accept_loop(self._listener))
        await self._serve_crl()
        LOG.info("registrar for %s on [%s]:%d (ACP namespace %s)", config.registrar_domain,
                 self.address, self.port, self.ctx.acp_ns)
        self._start_flooding()
        self._flooder = loop.create_task(self._flood_loop())

    def _on_pledge_solicited(self, _event: PledgeSolicited) -> None:
        """A pledge next to this node asked for a join proxy: its enrolment comes here within
        a second or two, so the worker's start (an interpreter and cryptography's imports,
        seconds on a small router) is begun now rather than on its first connection."""
        if self.worker is not None:
            self.worker.prestart()

    def _not_started(self, problem: str) -> None:
        self.problem = problem
        self.address = None
        LOG.error("registrar not started: %s", problem)

    async def stop(self) -> None:
        first, self._first = self._first, None
        if first is not None:   # prepared, never started: its worker goes too
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            if not first.cancelled() and first.exception() is None:
                await first.result()[0].stop()
        if self._unsub_new_interface is not None:
            self._unsub_new_interface()
            self._unsub_new_interface = None
        for task in (self._flooder, self._accepter, *self._pending, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._flooder, self._accepter, *self._pending,
                                           *self._tasks) if t is not None),
                             return_exceptions=True)
        self._flooder = self._accepter = None
        if self.address and self.port:  # withdraw at once from our own join proxy
            self.ctx.bus.publish(RegistrarHeard(self.address, self.port, 0))
        if self._grasp is not None and self._asa is not None:
            try:
                self._grasp.deregister_asa(self._asa)
            except GraspApiError as exc:
                LOG.debug("registrar ASA already gone: %s", exc)
        self._grasp = self._asa = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._crl_server is not None:
            self._crl_server.close()
            await self._crl_server.wait_closed()
            self._crl_server = None
        if self.worker is not None:
            await self.worker.stop()

    def _bind_in_acp(self, port: int) -> socket.socket:
        return netns.listener_in(self.ctx.acp_ns, port=port, backlog=LISTEN_BACKLOG, reuse=True)

    # -- connections: accepted here, served by the worker --------------------------------
    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _peer = await loop.sock_accept(listener)
            except OSError as exc:   # EMFILE and the like: do not spin
                LOG.warning("registrar: accept failed: %s", exc.strerror or exc)
                await asyncio.sleep(0.5)
                continue
            if len(self._pending) >= MAX_PENDING:
                conn.close()
                continue
            assert self.worker is not None
            self.worker.prestart()
            task = loop.create_task(self._first_data(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _first_data(self, conn: socket.socket) -> None:
        """Hand `conn` to the worker once it sends; one closed (or silent) without a byte is
        a probe: counted and closed here."""
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)
        try:
            loop.add_reader(conn.fileno(), ready)
            try:
                await asyncio.wait_for(readable, FIRST_DATA_TIMEOUT)
            finally:
                loop.remove_reader(conn.fileno())
            data = conn.recv(1, socket.MSG_PEEK)
        except (TimeoutError, OSError):
            data = b""
        except BaseException:
            conn.close()
            raise
        if not data:
            self.probes += 1
            conn.close()
            return
        assert self.worker is not None
        try:
            await self.worker.hand_over(conn)
        except (WorkerError, OSError) as exc:
            LOG.warning("registrar: a connection could not reach the worker: %s", exc)

    # -- revocation (RFC 8994 §6.2.5.3) ---------------------------------------------------
    @property
    def crl_url(self) -> str | None:
        """The CRL distribution point written into every certificate issued here."""
        return None if self.address is None else crl_url(self.address)

    async def _serve_crl(self) -> None:
        """GET http://[<our ACP address>]/acp.crl in the ACP namespace, from the file the
        worker signed; a failure is logged (nodes then keep their last good CRL), the
        registrar keeps running."""
        self.crl = CrlFile(crl_path(Path(self.ctx.config.registrar_dir)))
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(None, self._bind_in_acp, self.crl_port)
            self._crl_server = await serve_crl(self.crl, sock=sock)
        except OSError as exc:
            LOG.error("registrar: cannot serve the CRL on [::]:%d in %s: %s", self.crl_port,
                      self.ctx.acp_ns, exc.strerror or exc)
            return
        LOG.info("registrar: CRL at %s", self.crl_url)

    async def _ask(self, what: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.worker is None or self._listener is None:
            raise RequestError("the registrar is not running")
        try:
            return await self.worker.request(what, args)
        except WorkerError as exc:
            raise RequestError(str(exc)) from None

    async def revoke(self, target: str, reason: str = "") -> dict[str, Any]:
        """Revoke an acp-node-name or a serial; the worker signs the CRL served next at once
        (nodes learn it within their refresh interval). RequestError: unknown, not running."""
        return await self._ask("revoke", {"target": target, "reason": reason})

    async def _cmd_revoke(self, request: dict[str, Any]) -> dict[str, Any]:
        target = request.get("target")
        if not isinstance(target, str) or not target.strip():
            raise RequestError("revoke needs target: an acp-node-name or a certificate serial")
        reason = request.get("reason")
        return await self.revoke(target.strip(), reason if isinstance(reason, str) else "")

    async def _cmd_revoked(self, _request: dict[str, Any]) -> dict[str, Any]:
        if self.worker is None:
            return {"crl_url": self.crl_url, "crl_number": None, "revoked": [],
                    "revoked_names": []}
        return await self._ask("revoked")

    async def resign_crl_if_due(self) -> bool:
        """Have a worker sign the CRL anew once half its validity has passed."""
        built = self.reports.summary.get("crl_built")
        if self.worker is None or time.monotonic() < self._crl_after or \
                (isinstance(built, (int, float)) and time.time() - built < CRL_RESIGN):
            return False
        try:
            await self.worker.request("crl")
        except WorkerError as exc:
            LOG.error("registrar: signing the CRL failed: %s", exc)
            self._crl_after = time.monotonic() + RENEW_RETRY
            return False
        return True

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
            await self.renew_if_due()
            await self.resign_crl_if_due()
            await asyncio.sleep(self.flood_interval)

    # -- other registrars (RFC 8994 §6.11.7) ----------------------------------------------
    def _on_registrar_heard(self, event: RegistrarHeard) -> None:
        """Another registrar of the ACP announced itself: remember it, and stop allocating
        new addresses if it has our Registrar-ID (both would hand out the same ones)."""
        if self.address is None:
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
        own = registrar_id_of(self.address)   # a registrar allocated its own address first
        problem = None if own is None else conflict(own, self.address, event.address)
        if problem is not None and self.conflict is None:
            self.conflict = problem
            LOG.error("registrar: %s; new pledges are refused until acpd restarts", problem)
            if self.worker is not None:
                task = asyncio.get_running_loop().create_task(
                    self.worker.set_refuse_new(problem))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # -- our own LDevID -------------------------------------------------------------------
    async def renew_if_due(self) -> bool:
        """Have a worker re-issue our own LDevID in place when due (the worker's check said
        when): its TLS and MASA requests use it at once, workers started later load it, and
        IdentityChanged tells the other parts (the name stays the same)."""
        due = self.reports.summary.get("renew_at")
        if self.worker is None or not isinstance(due, (int, float)) or time.time() < due \
                or time.monotonic() < self._renew_after:
            return False
        try:
            renewed = (await self.worker.request("renew")).get("renewed") is True
        except WorkerError as exc:
            LOG.error("registrar: renewing this node's LDevID failed: %s", exc)
            self._renew_after = time.monotonic() + RENEW_RETRY
            return False
        if not renewed:
            self._renew_after = time.monotonic() + RENEW_RETRY
            return False
        self.renewals += 1
        LOG.info("registrar: renewed this node's LDevID")
        config = self.ctx.config
        self.ctx.bus.publish(IdentityChanged(str(config.ldevid_cert), str(config.ldevid_key),
                                             str(config.trust_anchors)))
        return True

    # -- views ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        config = self.ctx.config
        summary, reports = self.reports.summary, self.reports
        out: dict[str, Any] = {
            "running": self._listener is not None, "domain": config.registrar_domain,
            "address": self.address, "port": self.port, "namespace": self.ctx.acp_ns,
            "problem": self.problem, "default_masa_url": config.registrar_masa_url,
            "masa_namespace": self.masa_namespace, "flooding": self._grasp is not None,
            "floods_sent": self.floods_sent, "own_renewals": self.renewals,
            "last_flood_age": None if self.last_flood is None
            else round(time.time() - self.last_flood, 1),
            "enrolled": summary.get("enrolled") if self._listener is not None else None,
            "recent_refusals": [],
            "crl_url": self.crl_url if self._crl_server is not None else None,
            "crl_number": summary.get("crl_number"),
            "revoked": summary.get("revoked") or 0,
            "other_registrars": sorted(self.others.values(), key=lambda o: o["address"]),
            "registrar_id_conflict": self.conflict,
            "ldevid": str(config.ldevid_cert) if config.ldevid_cert else None,
            "ldevid_key": str(config.ldevid_key) if config.ldevid_key else None}
        if self._listener is not None and self.worker is not None:
            out.update(acp_node_name=summary.get("acp_node_name"),
                       registrar_id=summary.get("registrar_id"),
                       domain_ca=summary.get("domain_ca"),
                       allocations=summary.get("allocations"), counters=reports.counters(),
                       recent_status=reports.recent("recent_status"),
                       recent_refusals=reports.recent("recent_refusals"),
                       worker={**self.worker.status(), "probes": self.probes,
                               "crl_served": self.crl.served if self.crl is not None else 0})
        return out

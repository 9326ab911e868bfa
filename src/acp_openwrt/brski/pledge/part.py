"""acpd's BRSKI part: pledge while there is no LDevID, renew the LDevID while there is one.

acpd's DULL GRASP hears AN_Proxy floods and publishes `ProxyHeard`; this part tries the proxies
(per-proxy back-off: `ProxyBook`, the pledge's protocol core, run on one `core.CoreTimer` at its
next_timer(); each attempt is a `PledgeAttempt` core driven by `client.py`), and once enrolled
publishes `IdentityChanged` and stops pledging. With an LDevID it schedules renewal
(`renewal_time`, pure) at the EST server the ACP GRASP heard of (`EstServerHeard`, or asked
through the `acp_grasp` port when none was heard: this part may start after the flood went by),
in the ACP namespace, or else through the last proxy that worked. Control command "brski" shows
the state.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ...config.identity_files import STATE_DIR, with_identity_files
from ...control.server import RequestError
from ...core import CoreTimer
from ...events import AdjacencyUp, EstServerHeard, IdentityChanged, ProxyHeard
from ...logsafe import logsafe
from ...node_context import NodeContext, Part
from ..store import StoredIdentity, stored_certificate
from .est_servers import EstServer, EstServerBook
from .locator import IdentityPaths, Locator
from .plan import RENEW_FRACTION, RenewalError, renewal_time
from .proxies import INITIAL_BACKOFF, MAX_BACKOFF, ProxyBook, TryProxy

if TYPE_CHECKING:
    from .client import PledgeClient
    from .core import Enrolled, Refused
    from .enroll_report import PendingReport

# The BRSKI work (client.py: TLS, CMS, the IDevID and its key) loads when a proxy is first
# tried, not in every enrolled acpd (memory, issue 19); a renewal (renewal.py: EST
# re-enrolment) runs in a short-lived process (renewal_process.py), so an enrolled acpd never
# loads it. A pledge loads it ahead, in a worker thread, as soon as it hears an ACP node next
# to it (AdjacencyUp: that node's join proxy serves once it reaches a registrar, usually
# seconds later), so the first attempt does not wait for the imports (about 0.5 s under TCG);
# an idle pledge with no ACP node around stays small. Module attributes all the same:
# `part.reenroll` and the others resolve on first use (and a test may replace them).
_BRSKI_WORK = {"PledgeClient": ".client", "load_pledge_identity": ".client",
               "idevid_problem": ".idevid_check",
               "Enrolled": ".core", "Refused": ".core", "reenroll": ".renewal_process"}


def __getattr__(name: str) -> Any:
    where = _BRSKI_WORK.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __package__), name)
    globals()[name] = value
    return value


def _work(name: str) -> Any:
    """A BRSKI work name: as set on this module (a test's stand-in), else imported now."""
    return globals()[name] if name in globals() else __getattr__(name)

LOG = logging.getLogger("acpd.brski")
DEFAULT_STATE_DIR = STATE_DIR


def _set(path: Path | None) -> Path:
    """A path `with_identity_files` filled in."""
    if path is None:
        raise ValueError("identity file path not set")
    return path


def _now() -> float:
    """The book's clock: the loop's monotonic time (CoreTimer's), time.monotonic() off-loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class PledgePart(Part):
    name = "brski"

    def __init__(self, ctx: NodeContext, *, state_dir: Path = DEFAULT_STATE_DIR,
                 initial_backoff: float = INITIAL_BACKOFF, max_backoff: float = MAX_BACKOFF,
                 accept_nonceless: bool = True, renew_fraction: float = RENEW_FRACTION) -> None:
        self.ctx = ctx
        config = with_identity_files(ctx.config, state_dir)  # sets every path left unset
        self.paths = IdentityPaths(
            idevid_cert=_set(config.idevid_cert), idevid_key=_set(config.idevid_key),
            ldevid_cert=_set(config.ldevid_cert), ldevid_key=_set(config.ldevid_key),
            trust_anchors=_set(config.trust_anchors))
        self.masa_anchors = _set(config.manufacturer_trust_anchor)
        self.book = ProxyBook(initial_backoff=initial_backoff, max_backoff=max_backoff)
        self.accept_nonceless = accept_nonceless
        self.renew_fraction = renew_fraction
        self.state = "stopped"
        self.acp_node_name: str | None = None
        self.last_refusal: str | None = None
        self.attempts = 0
        self.enrolled_at: float | None = None
        self.est_servers = EstServerBook()  # every EST server heard, in the ACP namespace
        self.est_server: Locator | None = None  # the last one a renewal worked at (or first)
        self.last_proxy: Locator | None = None
        self.renewal_failures = 0
        self.next_renewal: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: CoreTimer[TryProxy] | None = None       # the book's, while pledging
        self._client: PledgeClient | None = None
        self._pending_report: PendingReport | None = None
        self._loading: asyncio.Future[Any] | None = None  # the IDevID, loaded ahead
        self._check: asyncio.Task[None] | None = None      # the IDevID check, while it runs
        self._attempt: asyncio.Task[None] | None = None
        self._enrolled: asyncio.Future[bool] | None = None
        ctx.control.register("brski", lambda _request: self.status())
        ctx.control.register("enroll", self._enroll)
        ctx.bus.subscribe(ProxyHeard, lambda ev: self.add_proxy(ev.address, ev.port,
                                                                ev.dull_ifname))
        ctx.bus.subscribe(EstServerHeard, lambda ev: self.set_est_server(ev.address, ev.port))
        ctx.bus.subscribe(AdjacencyUp, lambda _ev: self._load_ahead())

    # --- inputs from acpd --------------------------------------------------------------------

    def add_proxy(self, address: str, port: int, ifname: str | None) -> None:
        """An AN_Proxy flood was heard on DULL link `ifname` (locator address, TCP port)."""
        if self.book.heard(Locator(address, int(port), ifname), _now()):
            LOG.info("pledge: join proxy [%s%%%s]:%d heard", address, ifname, port)
            self._rearm()

    def set_est_server(self, address: str, port: int) -> None:
        """An EST server (SRV.est / a registrar) reachable in the ACP namespace, for renewal;
        every one heard is kept (more than one registrar: renewal fails over)."""
        self.est_servers.heard(EstServer(address, int(port)), _now())
        if self.est_server is None:
            self.est_server = Locator(address, int(port))

    async def _enroll(self, _request: dict[str, Any]) -> dict[str, Any]:
        """Control command `enroll` (`ubus call acp enroll`): not enrolled, try every proxy
        heard at once; enrolled, renew the LDevID now."""
        if self.state == "pledging":
            proxies = self.book.retry_all_now(_now())
            self._rearm()
            return {"state": self.state, "proxies_tried_now": proxies}
        if self.state in ("enrolled", "renewing"):
            renewed = await self.renew_now()
            return {"state": self.state, "renewed": renewed,
                    "error": None if renewed else self.last_refusal}
        raise RequestError(f"cannot enrol: BRSKI state is {self.state}"
                           + (f" ({self.last_refusal})" if self.last_refusal else ""))

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="brski")

    async def stop(self) -> None:
        self._stop_pledging()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "acp_node_name": self.acp_node_name,
                "attempts": self.attempts, "last_refusal": self.last_refusal,
                "proxies": self.book.status(_now()),
                "est_server": str(self.est_server) if self.est_server else None,
                "est_servers": self.est_servers.status(_now()),
                "next_renewal": self.next_renewal, "renewal_failures": self.renewal_failures,
                "ldevid": str(self.paths.ldevid_cert), "ldevid_key": str(self.paths.ldevid_key)}

    @property
    def stored(self) -> StoredIdentity:
        return StoredIdentity(self.paths.ldevid_cert, self.paths.ldevid_key,
                              self.paths.trust_anchors)

    async def _run(self) -> None:
        if stored_certificate(self.paths.ldevid_cert, self.paths.ldevid_key) is None:
            if not await self._pledge():
                return
        await self._renew_forever()

    # --- pledging ----------------------------------------------------------------------------

    async def _pledge(self) -> bool:
        # The IDevID is checked in a short-lived process, and loaded (with the BRSKI work's
        # modules) only for the first attempt: an idle pledge stays small. The check runs
        # beside pledging, not before it: a Python start and its cryptography import take
        # seconds on a slow box (5 s in a TCG guest), and a proxy heard meanwhile is tried at
        # once. The first attempt loads the IDevID itself (the same verdict), so it ends the
        # check.
        loop = asyncio.get_running_loop()
        self._client = None
        self._loading = None
        self.state = "pledging"
        self._enrolled = loop.create_future()
        self._timer = CoreTimer(self.book, self._execute, name="pledge")
        self._timer.rearm()
        due = self.book.next_timer()
        if due is None or due > loop.time():   # no attempt at once: check meanwhile
            self._check = loop.create_task(self._check_idevid(), name="IDevID check")
        try:
            return await self._enrolled
        finally:
            self._stop_pledging()

    async def _check_idevid(self) -> None:
        try:
            problem = await _work("idevid_problem")(self.paths.idevid_cert,
                                                    self.paths.idevid_key, self.masa_anchors)
        except OSError as exc:  # no child process: the first attempt loads the IDevID anyway
            LOG.warning("pledge: IDevID check did not run: %s", exc)
            problem = None
        self._check = None
        if problem is not None and self.state == "pledging" and self._client is None:
            self._stop_pledging()
            self._no_idevid(problem)
            if self._enrolled is not None and not self._enrolled.done():
                self._enrolled.set_result(False)

    def _end_check(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.rearm()

    def _execute(self, outputs: Sequence[TryProxy]) -> None:
        """What the book's timer asks for: an attempt through a proxy (one at a time)."""
        for output in outputs:
            self._attempt = asyncio.get_running_loop().create_task(
                self._try(output.locator), name="pledge attempt")

    def _no_idevid(self, problem: str) -> None:
        self.state = "no-idevid"
        self.last_refusal = problem
        LOG.error("pledge: cannot start: %s", problem)

    def _load_client(self, identity: Any = None) -> PledgeClient | None:
        """The pledge's client with its IDevID (`identity` if loaded ahead), loaded at the first
        attempt; None (and pledging ends: state no-idevid) if the IDevID has become unusable
        since the start."""
        try:
            if identity is None:
                identity = _work("load_pledge_identity")(
                    self.paths.idevid_cert, self.paths.idevid_key, self.masa_anchors)
        except (ValueError, OSError) as exc:
            self._no_idevid(str(exc))
            if self._enrolled is not None and not self._enrolled.done():
                self._enrolled.set_result(False)
            return None
        client: PledgeClient = _work("PledgeClient")(
            identity, self.paths, namespace=self.ctx.dull_ns,
            accept_nonceless=self.accept_nonceless,
            detach_report=True)  # the coordinator sends it, off the path of its restart
        return client

    def _load_ahead(self) -> None:
        """An ACP node is next to us: load the BRSKI work and the IDevID now, off the loop, so
        that the attempt its join proxy allows soon need not wait for them."""
        if self.state != "pledging" or self._client is not None or self._loading is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside acpd's loop (a test's bus): nothing to do
            return
        self._loading = loop.run_in_executor(None, self._load_work)

    def _load_work(self) -> Any:
        """In a worker thread: the BRSKI work's modules, then the IDevID (its certificate chain
        and key, as the first attempt uses them)."""
        for name in ("PledgeClient", "Enrolled", "Refused"):
            _work(name)
        return _work("load_pledge_identity")(
            self.paths.idevid_cert, self.paths.idevid_key, self.masa_anchors)

    async def _try(self, locator: Locator) -> None:
        if self._client is None:
            self._end_check()   # loading the IDevID here gives its verdict (and saves the CPU)
            identity = None
            if self._loading is not None:
                try:
                    identity = await self._loading   # loaded ahead, or still loading
                except Exception:  # loaded again below, where a failure ends pledging
                    LOG.debug("pledge: loading the BRSKI work ahead failed", exc_info=True)
            self._client = self._load_client(identity)
            if self._client is None:
                self._attempt = None
                return
        self.attempts += 1
        try:
            result: Enrolled | Refused = await self._client.attempt(locator)
        except Exception as exc:  # the book must hear of every attempt's end
            LOG.exception("pledge: attempt via %s failed", locator)
            result = _work("Refused")(f"{type(exc).__name__}: {exc}")
        self._attempt = None
        enrolled: type[Enrolled] = _work("Enrolled")
        if isinstance(result, enrolled):
            self.book.done(locator)
            self.acp_node_name, self.last_proxy = result.acp_node_name, locator
            self.enrolled_at = time.time()
            self.state = "enrolled"
            self._pending_report = getattr(self._client, "pending_report", None)
            self._publish()
            if self._enrolled is not None and not self._enrolled.done():
                self._enrolled.set_result(True)
            return
        refused = cast("Refused", result)
        self.last_refusal = refused.reason
        self.book.failed(locator, _now(), refused.reason)
        self._rearm()

    def _stop_pledging(self) -> None:
        self._end_check()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._attempt is not None:
            self._attempt.cancel()
            self._attempt = None
        self.book.trying = None

    def _publish(self) -> None:
        # the enrolment's enrollstatus goes with it: the coordinator sends it off its restart
        report, self._pending_report = self._pending_report, None
        self.ctx.bus.publish(IdentityChanged(str(self.paths.ldevid_cert),
                                             str(self.paths.ldevid_key),
                                             str(self.paths.trust_anchors), report=report))

    # --- renewal -----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            # read without cryptography: an enrolled node's steady state holds none (issue 19)
            current = stored_certificate(self.paths.ldevid_cert, self.paths.ldevid_key)
            if current is None:
                self.state = "no-ldevid"
                return
            from ...identity.cert_name import certificate_node_name_text
            from ...identity.cert_reader import validity
            self.acp_node_name = certificate_node_name_text(current)
            self.state = "enrolled"
            now = dt.datetime.now(dt.UTC)
            if now >= validity(current)[1] and self.renewal_failures:
                # Expired and the EST server would not renew it: enrol again with the IDevID
                # (RFC 8994 §6.2.5.5); the old files stay until a new identity is stored.
                LOG.warning("brski: LDevID expired; falling back to BRSKI with the IDevID")
                self.renewal_failures = 0
                if not await self._pledge():
                    return
                continue
            plan = renewal_time(current, now, fraction=self.renew_fraction,
                                failures=self.renewal_failures)
            self.next_renewal = plan.at.isoformat()
            if not plan.due:
                await asyncio.sleep(min((plan.at - now).total_seconds(), 3600.0))
                continue
            await self.renew_now()

    async def _ask_acp_grasp_for_est_server(self) -> None:
        """Pull what ACP GRASP heard (or can discover) before this part existed."""
        acp_grasp = self.ctx.acp_grasp
        if acp_grasp is None:  # not in the ACP (yet), or its GRASP is not running
            return
        found = await acp_grasp.find_est_server()
        if found is not None:
            self.set_est_server(found[0], found[1])

    def _issuing_registrar(self) -> str | None:
        """The ACP address of the registrar that issued our LDevID: it names itself as the CRL
        distribution point (brski/registrar/revocation.py), None if unknown."""
        from ...revocation.crl import CrlError, crl_urls, split_url
        found = stored_certificate(self.paths.ldevid_cert, self.paths.ldevid_key)
        for url in crl_urls(found) if found is not None else []:
            try:
                return split_url(url)[0]
            except CrlError:
                continue
        return None

    async def renew_now(self) -> bool:
        """One renewal: at each EST server heard in turn until one renews (the one that last
        worked first, those that failed last), else through the last join proxy."""
        if not self.est_servers:
            await self._ask_acp_grasp_for_est_server()
        self.est_servers.prefer(self._issuing_registrar())
        targets = [(Locator(s.address, s.port), self.ctx.acp_ns)
                   for s in self.est_servers.candidates()]
        if not targets and self.last_proxy is not None:
            targets = [(self.last_proxy, self.ctx.dull_ns)]
        if not targets:
            self.renewal_failures += 1
            self.last_refusal = "renewal due but no EST server known yet"
            LOG.warning("brski: %s", self.last_refusal)
            return False
        self.state = "renewing"
        errors = []
        for target, namespace in targets:
            server = EstServer(target.address, target.port)
            try:
                await _work("reenroll")(target, self.stored, namespace=namespace)
            except (RenewalError, OSError, ValueError) as exc:
                error = logsafe(exc, 400)  # the EST server's words
                errors.append(error)
                if namespace == self.ctx.acp_ns:
                    self.est_servers.failed(server, _now(), error)
                LOG.warning("brski: renewal at %s failed: %s", target, error)
                continue
            if namespace == self.ctx.acp_ns:
                self.est_servers.worked(server, _now())
                self.est_server = target
            self.renewal_failures = 0
            self._publish()
            return True
        self.renewal_failures += 1
        self.last_refusal = f"renewal failed: {'; '.join(errors)}"
        return False

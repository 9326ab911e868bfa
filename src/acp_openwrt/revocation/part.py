"""acpd's revocation part: fetches the domain's CRL over the ACP and tells the channels.

At start it loads the CRLs kept in `crl_file` (unset: `acp-crl.pem` beside the LDevID),
publishes `RevocationUpdated` with what they revoke, and learns the CRL distribution points
from its own LDevID (the registrar writes the same one into every certificate it issues).
It fetches each at start, every `crl_refresh` seconds and whenever a channel comes up
(`ChannelUp`; a node that just joined the ACP learns the CRL at once), over plain HTTP from
inside the ACP namespace. A fetch that fails keeps the last good CRL and is retried after
10 s, doubling up to `crl_refresh` (RFC 8994 §6.2.3 rule 3 with the §6.7 back-off); a new CRL
is kept only when it is signed by one of our trust anchors and not older than the one held,
written atomically, and published when the set of revoked certificates changed. The channels
part closes the channels of a revoked peer and refuses new ones (channels/revocation.py).

The keeper (`keeper.CrlKeeper`) is the protocol core; this part is its edge.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import netns
from ..brski.http import HttpConnection, HttpError
from ..brski.store import write_atomic
from ..core import CoreTimer
from ..events import ChannelUp, CrlDistributionPointsSeen, RevocationUpdated
from ..identity.cert_reader import Certificate, CertificateError, load_certificates, pem
from ..node_context import NodeContext, Part
from .crl import CRL_MEDIA_TYPE, CrlError, crl_pem, crl_urls, load_crls, split_url
from .keeper import CrlKeeper, Fetch

LOG = logging.getLogger("acpd.revocation")
CRL_FILE_NAME = "acp-crl.pem"
FETCH_TIMEOUT = 10.0
MAX_CRL_BYTES = 1024 * 1024


def crl_file(config: Any) -> Path | None:
    if config.crl_file is not None:
        return Path(config.crl_file)
    if config.ldevid_cert is None:
        return None
    return Path(config.ldevid_cert).parent / CRL_FILE_NAME


async def fetch_crl(url: str, namespace: str | None, *, within: float = FETCH_TIMEOUT) -> bytes:
    """GET the CRL at `url` (http://[v6]:port/path) from inside `namespace` (None: ours)."""
    address, port, path = split_url(url)
    loop = asyncio.get_running_loop()
    if namespace is None:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    else:
        sock = await loop.run_in_executor(None, netns.socket_in, namespace, socket.AF_INET6,
                                          socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(within):
            await loop.sock_connect(sock, (address, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_CRL_BYTES)
    except BaseException:
        sock.close()
        raise
    connection = HttpConnection(reader, writer, host=f"[{address}]", timeout=within)
    try:
        response = await connection.request("GET", path, headers={"Accept": CRL_MEDIA_TYPE,
                                                                  "Connection": "close"})
    finally:
        await connection.close()
    if response.status != 200:
        raise HttpError(f"HTTP {response.status}: {response.text()}")
    return response.body


class RevocationPart(Part):
    name = "revocation"

    def __init__(self, ctx: NodeContext, *, refresh: float | None = None,
                 namespace: str | None = "acp") -> None:
        """`namespace`: where fetches leave from ("acp": the ACP namespace; None: acpd's own,
        for tests)."""
        self.ctx = ctx
        self.refresh = float(refresh if refresh is not None else ctx.config.crl_refresh)
        self.namespace = ctx.acp_ns if namespace == "acp" else namespace
        self.keeper = CrlKeeper([], refresh=self.refresh)
        self.file = crl_file(ctx.config)
        self.problem: str | None = None
        self._timer: CoreTimer[Fetch] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribers = [ctx.bus.subscribe(ChannelUp, self._on_channel_up),
                               ctx.bus.subscribe(CrlDistributionPointsSeen, self._on_urls)]
        self._published: frozenset[tuple[bytes, int]] | None = None
        self.last_change: float | None = None

    async def start(self) -> None:
        config = self.ctx.config
        if self.ctx.identity is None or config.ldevid_cert is None:
            self.problem = "no LDevID"
            return
        self._load_identity()
        await self._restore_issuers()
        if self.file is not None and self.file.exists():
            try:
                data = await asyncio.get_running_loop().run_in_executor(None,
                                                                        self.file.read_bytes)
                for why in self.keeper.load(load_crls(data), dt.datetime.now(dt.UTC)):
                    LOG.warning("revocation: a CRL in %s not used: %s", self.file, why)
            except (OSError, CrlError) as exc:
                LOG.warning("revocation: cannot read %s: %s", self.file, exc)
        self._publish(force=True)
        self._timer = CoreTimer(self.keeper, self._execute, name="revocation")
        self._timer.rearm()
        if not self.keeper.sources:
            LOG.info("revocation: our certificate names no CRL distribution point: no CRL "
                     "is fetched")

    def _load_identity(self) -> None:
        config = self.ctx.config
        if config.ldevid_cert is None:
            return
        try:
            own = load_certificates(config.ldevid_cert)
            anchors = load_certificates(config.trust_anchors) if config.trust_anchors else []
        except (CertificateError, OSError) as exc:
            self.problem = f"cannot load the LDevID or trust anchors: {exc}"
            LOG.error("revocation: %s", self.problem)
            return
        self.problem = None
        self.keeper.anchors = list(anchors)
        self.keeper.add_urls(crl_urls(own[0]) if own else [], self._now())

    async def reload_identity(self) -> None:
        self._load_identity()
        if self._timer is not None:
            self._timer.rearm()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def _on_channel_up(self, _event: ChannelUp) -> None:
        self.keeper.refresh_all(self._now())
        if self._timer is not None:
            self._timer.rearm()

    def _on_urls(self, event: CrlDistributionPointsSeen) -> None:
        if self.problem == "no LDevID":
            return
        try:
            cas = [Certificate(der) for der in event.cas]
        except ValueError:
            cas = []
        added = self.keeper.add_issuers(cas)
        for ca in added:
            LOG.info("revocation: CRLs signed by %s (a verified peer's CA) are taken too",
                     ca.subject.rfc4514_string())
        if added:
            self._spawn(self._save_issuers())
        for url in self.keeper.add_urls(event.urls, self._now()):
            LOG.info("revocation: a peer's certificate names CRL distribution point %s", url)
        if self._timer is not None:
            self._timer.rearm()

    def _execute(self, outputs: Sequence[Fetch]) -> None:
        for fetch in outputs:
            self._spawn(self._fetch(fetch.url))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # The CAs learned from verified peers (other registrars' sub-CAs) are kept beside the CRL
    # file: after a restart, a kept CRL of theirs is taken at once, not refused until a peer of
    # theirs verifies again.
    def _issuers_file(self) -> Path | None:
        return None if self.file is None else self.file.with_name(self.file.name + ".issuers")

    async def _restore_issuers(self) -> None:
        path = self._issuers_file()
        if path is None or not path.exists():
            return
        loop = asyncio.get_running_loop()
        try:
            cas = await loop.run_in_executor(None, load_certificates, path)
        except (OSError, CertificateError) as exc:
            LOG.warning("revocation: cannot read %s: %s", path, exc)
            return
        taken = self.keeper.restore_issuers(cas)
        if len(taken) < len(cas):
            LOG.warning("revocation: %d of the CAs in %s not signed by a trust anchor: not used",
                        len(cas) - len(taken), path)

    async def _save_issuers(self) -> None:
        path = self._issuers_file()
        if path is None:
            return
        data = b"".join(pem(ca.der) for ca in self.keeper.issuers)
        try:
            await asyncio.get_running_loop().run_in_executor(None, write_atomic, path, data,
                                                             0o644)
        except OSError as exc:
            LOG.warning("revocation: cannot keep the peers' CAs in %s: %s", path, exc)

    async def _fetch(self, url: str) -> None:
        try:
            data = await fetch_crl(url, self.namespace)
        except (OSError, HttpError, CrlError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            LOG.log(logging.INFO if self.keeper.sources[url].failures else logging.WARNING,
                    "revocation: CRL from %s not fetched: %s (keeping the last good one)",
                    url, reason)
            self.keeper.failed(url, reason, self._now(), dt.datetime.now(dt.UTC))
        else:
            changed = self.keeper.fetched(url, data, self._now(), dt.datetime.now(dt.UTC))
            source = self.keeper.sources[url]
            if source.last_error is not None:
                LOG.warning("revocation: CRL from %s refused: %s", url, source.last_error)
            elif changed:
                await self._save()
                self._publish()
            elif self._newer_than_file():
                await self._save()
        if self._timer is not None:
            self._timer.rearm()

    def _newer_than_file(self) -> bool:
        return self.file is not None and not self.file.exists() and bool(self.keeper.crls())

    async def _save(self) -> None:
        if self.file is None:
            return
        data = crl_pem(self.keeper.crls())
        try:
            await asyncio.get_running_loop().run_in_executor(None, write_atomic, self.file,
                                                             data, 0o644)
        except OSError as exc:
            LOG.warning("revocation: cannot keep the CRL in %s: %s", self.file, exc)

    def _publish(self, force: bool = False) -> None:
        revoked = self.keeper.revoked()
        if not force and revoked == self._published:
            return
        if self._published is not None:
            LOG.warning("revocation: the CRL now revokes %d certificate(s)", len(revoked))
        self._published = revoked
        self.last_change = time.time()
        self.ctx.bus.publish(RevocationUpdated(revoked))

    def status(self) -> dict[str, Any]:
        out = self.keeper.status(self._now(), dt.datetime.now(dt.UTC))
        out.update(file=str(self.file) if self.file else None, problem=self.problem,
                   last_change=None if self.last_change is None else round(self.last_change, 1))
        return out

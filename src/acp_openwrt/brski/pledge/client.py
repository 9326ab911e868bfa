"""The pledge's asyncio edge: one attempt through one proxy, from TCP connect to stored LDevID.

Connects (in the DULL namespace when one is given, scoped to the proxy's link), runs the
`PledgeAttempt` state machine over one persistent TLS connection, stores the identity
atomically, then reports enrollstatus on a fresh TLS connection made with the new LDevID and
verified against the new trust anchors (RFC 8995 §5.9.4), which also proves the stored
identity works: here, or (`detach_report`, as acpd's pledge does) left pending for the caller
(`pending_report`; enroll_report.py), so that acpd's restart with its new identity need not
wait for it. Network and protocol failures become `Refused` with a one-line reason.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ... import netns
from ...logsafe import logsafe
from .. import wellknown
from ..http import HttpConnection, HttpError
from ..store import StoredIdentity, StoreError, store_identity
from ..tls import peer_certificate, peer_chain, provisional_client_context, verified_client_context
from .core import (
    Enrolled,
    PledgeAttempt,
    PledgeIdentity,
    Refused,
    SendRequest,
    Wait,
    _status_body,
)
from .enroll_report import PendingReport
from .locator import IdentityPaths, Locator

LOG = logging.getLogger("acpd.brski.pledge")
ATTEMPT_TIMEOUT = 30.0
IO_TIMEOUT = 10.0


def _wall_clock() -> dt.datetime:
    """The edge reads the clock; the core is given it."""
    return dt.datetime.now(dt.UTC)


async def _connect(locator: Locator, context: ssl.SSLContext, namespace: str | None,
                   io_timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    scope = 0
    ifname = locator.ifname
    if ifname:
        lookup = socket.if_nametoindex
        scope = await loop.run_in_executor(
            None, lambda: netns.call_in(namespace, lookup, ifname) if namespace
            else lookup(ifname))
    if namespace:
        sock = await loop.run_in_executor(None, netns.socket_in, namespace, socket.AF_INET6,
                                          socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (locator.address, locator.port, 0, scope)),
                               io_timeout)
        return await asyncio.wait_for(asyncio.open_connection(
            sock=sock, ssl=context, server_hostname="", ssl_handshake_timeout=io_timeout),
            io_timeout)
    except BaseException:
        sock.close()
        raise


class PledgeClient:
    """Runs attempts for one pledge identity; keeps no state between attempts."""

    def __init__(self, identity: PledgeIdentity, paths: IdentityPaths, *,
                 namespace: str | None = None, accept_nonceless: bool = True,
                 io_timeout: float = IO_TIMEOUT, attempt_timeout: float = ATTEMPT_TIMEOUT,
                 detach_report: bool = False) -> None:
        self.identity, self.paths, self.namespace = identity, paths, namespace
        self.accept_nonceless = accept_nonceless
        self.detach_report = detach_report  # enrollstatus left to the caller: pending_report
        self.io_timeout, self.attempt_timeout = io_timeout, attempt_timeout
        self.last_attempt: PledgeAttempt | None = None
        self.pending_report: PendingReport | None = None

    async def attempt(self, locator: Locator) -> Enrolled | Refused:
        """One full attempt; the identity is stored when the result is Enrolled."""
        try:
            return await asyncio.wait_for(self._attempt(locator), self.attempt_timeout)
        except TimeoutError:
            return self._refused(locator, f"attempt took longer than {self.attempt_timeout:.0f} s")

    def _refused(self, locator: Locator, reason: str) -> Refused:
        """The reason carries what the registrar (or anyone posing as one) said: escaped for
        the log and for `acpctl brski`."""
        reason = logsafe(reason, 400)
        LOG.warning("pledge: enrolment via %s refused: %s", locator, reason)
        return Refused(reason)

    async def _attempt(self, locator: Locator) -> Enrolled | Refused:
        LOG.info("pledge: enrolling via %s", locator)
        context = provisional_client_context(self.paths.idevid_cert, self.paths.idevid_key)
        try:
            reader, writer = await _connect(locator, context, self.namespace, self.io_timeout)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            return self._refused(locator, f"cannot reach the registrar: "
                                          f"{exc or type(exc).__name__}")
        connection = HttpConnection(reader, writer, timeout=self.io_timeout)
        attempt = PledgeAttempt(self.identity, accept_nonceless=self.accept_nonceless)
        self.last_attempt = attempt
        try:
            action = attempt.connected(peer_certificate(writer), peer_chain(writer),
                                       now=_wall_clock())
            while isinstance(action, (SendRequest, Wait)):
                if isinstance(action, Wait):
                    await asyncio.sleep(action.seconds)
                    action = attempt.resend()
                    continue
                response = await connection.request(action.method, action.path, action.body,
                                                    action.headers)
                action = attempt.response(response, now=_wall_clock())
        except (TimeoutError, HttpError, OSError, ssl.SSLError, ConnectionError) as exc:
            return self._refused(locator, f"registrar connection failed in state "
                                          f"{attempt.state.value}: {exc or type(exc).__name__}")
        finally:
            await connection.close()
        if isinstance(action, Refused):
            return self._refused(locator, action.reason)
        try:
            stored = store_identity(action.cert, action.key, action.trust_anchors,
                                    cert_path=self.paths.ldevid_cert,
                                    key_path=self.paths.ldevid_key,
                                    trust_anchors_path=self.paths.trust_anchors)
        except (StoreError, OSError) as exc:
            return self._refused(locator, f"cannot store the LDevID: {exc}")
        LOG.info("pledge: enrolled via %s as %s", locator, action.acp_node_name)
        report = PendingReport(locator, stored, self.namespace, self.io_timeout)
        if self.detach_report:
            self.pending_report = report
        else:
            await report.send()
        return action


async def report_enrolled(locator: Locator, stored: StoredIdentity, *, namespace: str | None,
                          io_timeout: float = IO_TIMEOUT) -> bool:
    """enrollstatus true over a new TLS connection with the LDevID (best effort): whether the
    registrar took it (a 2xx answer)."""
    try:
        context = verified_client_context(stored.trust_anchors_path,
                                          cert_path=stored.cert_path,
                                          key_path=stored.key_path)
        reader, writer = await _connect(locator, context, namespace, io_timeout)
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        LOG.info("pledge: enrollstatus not sent (%s)", exc or type(exc).__name__)
        return False
    connection = HttpConnection(reader, writer, timeout=io_timeout)
    try:
        response = await connection.request(
            "POST", wellknown.ENROLL_STATUS, _status_body(True, None),
            {"Content-Type": wellknown.JSON, "Connection": "close"})
    except (TimeoutError, HttpError, OSError, ConnectionError) as exc:
        LOG.info("pledge: enrollstatus not delivered (%s)", logsafe(exc))
        return False
    finally:
        await connection.close()
    if not 200 <= response.status < 300:
        LOG.info("pledge: enrollstatus refused (%s)", response.status)
        return False
    LOG.info("pledge: enrollstatus delivered via %s (pid %d)", locator, os.getpid())
    return True


def load_pledge_identity(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                         anchors_path: str | os.PathLike[str]) -> PledgeIdentity:
    """The IDevID, its key and the MASA anchors from PEM files (ValueError when unusable)."""
    from ...identity.certificate import load_certificate, load_certificates
    cert = load_certificate(cert_path)
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load IDevID key {key_path}: {exc}") from None
    return PledgeIdentity(cert, key, tuple(load_certificates(anchors_path)))  # type: ignore[arg-type]

"""The pledge's enrollstatus report (RFC 8995 §5.9.4), sent off the path of acpd's restart.

Once the LDevID is stored, acpd runs itself anew (exec) to leave the BRSKI work's memory
behind. The report, a new TLS connection made with the new LDevID, took 0.35-0.55 s of that
path under TCG, in every hop of a line that forms one enrolment after another (issue 19). So
the pledge's client (`detach_report`) leaves it pending, the pledge hands it over with its
`IdentityChanged`, and the coordinator sends it from a copy of itself made just before the
exec (`send_detached`: fork twice, so that the reporter is init's child, never a child, nor a
zombie, of the acpd run anew), when the parts have stopped and their sockets are closed. The
copy has TLS and the client loaded already: no interpreter start, no imports (a new Python
process for it cost more CPU under TCG than the report saved, slowing the restart beside it).
It reports through the same join proxy (the link and the proxy outlive the restart), logs the
outcome on acpd's stderr and exits; an alarm ends it if it hangs. Without an exec (the parts
rebuilt in place) the report is a task of the running acpd (`send`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import warnings
from dataclasses import dataclass

from ..store import StoredIdentity
from .locator import Locator

LOG = logging.getLogger("acpd.brski.pledge")
IO_TIMEOUT = 10.0  # client.py's, per exchange
# connect, TLS, request: each within io_timeout; the alarm is the backstop for a copy that hangs
# (a lock some other thread of acpd held at the fork)
DEADLINE_S = 60


@dataclass(frozen=True)
class PendingReport:
    """enrollstatus true, still to be reported through `locator` with the stored LDevID."""
    locator: Locator
    stored: StoredIdentity
    namespace: str | None = None
    io_timeout: float = IO_TIMEOUT

    async def send(self) -> bool:
        """Report here; whether the registrar took it."""
        from .client import report_enrolled
        return await report_enrolled(self.locator, self.stored, namespace=self.namespace,
                                     io_timeout=self.io_timeout)

    def send_detached(self) -> bool:
        """Report from a detached copy of this process (fork twice) and return at once; False
        if no copy could be made (then `send` here). Call it with no other work in flight:
        the copy has only the calling thread."""
        with warnings.catch_warnings():  # 3.12+: "multi-threaded, use of fork() may deadlock"
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                pid = os.fork()
            except OSError as exc:
                LOG.warning("pledge: enrollstatus not detached (%s): reporting here", exc)
                return False
            if pid == 0:  # the first copy only makes the reporter, then exits
                try:
                    if os.fork() == 0:
                        self._report_and_exit()
                    os._exit(0)
                except BaseException:
                    os._exit(1)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else: the reporter was made
            return True
        if os.waitstatus_to_exitcode(status) != 0:
            LOG.warning("pledge: enrollstatus not detached (no second fork): reporting here")
            return False
        LOG.info("pledge: enrollstatus reported by a detached copy of acpd")
        return True

    def _report_and_exit(self) -> None:
        code = 1
        try:
            os.setsid()  # no signal sent to acpd's process group reaches the reporter
            signal.set_wakeup_fd(-1)  # the old loop's: not ours
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                signal.signal(signum, signal.SIG_DFL)
            signal.alarm(DEADLINE_S)
            code = 0 if asyncio.run(self.send()) else 1
        except BaseException:  # whatever it was, this copy must not go on as acpd
            code = 2
        finally:
            os._exit(code)

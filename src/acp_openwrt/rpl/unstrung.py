"""The optional external RPL daemon: unstrung's `sunshine`, run in the ACP namespace.

acpd carries its own RPL; this launcher exists for comparison with the seed's implementation
(RFC 8994's authors ran unstrung). sunshine's command line (programs/sunshine/main.cpp) takes
per-interface settings after each `-i IFNAME`: `-I` instance id, `-G` DODAG id, `-p` prefix,
`-R` rank. The root is given its DODAG id (its ACP address), rank 1 and the range it is root
for; every other node its own ACP prefix. sunshine reads its interfaces only at start, so a
changed set of ACP interfaces means a restart.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from pathlib import Path

from .. import netns
from ..child_end import end_child
from . import constants as c

LOG = logging.getLogger("acpd.rpl.unstrung")
SUNSHINE = "sunshine"
ROOT_RANK = 1  # sunshine's own convention for a DAG root
STOP_GRACE = 2.0


class RplLaunchError(RuntimeError):
    """The external RPL daemon cannot be started (one line, says why)."""


def sunshine_argv(binary: str, interfaces: list[str], *, root: bool,
                  dodag_id: ipaddress.IPv6Address | None, prefix: ipaddress.IPv6Network,
                  instance: int = c.RPL_DEFAULT_INSTANCE, verbose: bool = True) -> list[str]:
    """sunshine's command line: every option after the `-i` it applies to."""
    if not interfaces:
        raise RplLaunchError("sunshine needs at least one interface")
    if root and dodag_id is None:
        raise RplLaunchError("a DODAG root needs a DODAG id")
    argv = [binary]
    if verbose:
        argv.append("-v")
    for ifname in interfaces:
        argv += ["-i", ifname, "-I", str(instance), "-p", str(prefix)]
        if root:
            argv += ["-G", str(dodag_id), "-R", str(ROOT_RANK)]
    return argv


class SunshineLauncher:
    """Finds sunshine, runs it inside the namespace, logs to `<log_dir>/sunshine.log`."""

    def __init__(self, namespace: str, log_dir: Path, binary: str | None = None) -> None:
        self.namespace = namespace
        self.log_dir = log_dir
        self.binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self.argv: list[str] = []

    def find(self) -> str:
        """The sunshine executable, or RplLaunchError naming where it was looked for."""
        if self.binary is not None:
            if os.path.isfile(self.binary) and os.access(self.binary, os.X_OK):
                return self.binary
            raise RplLaunchError(f"unstrung sunshine is not installed at {self.binary}")
        import shutil  # here: only the external mode uses it (acpd's memory budget, issue 19)
        found = shutil.which(SUNSHINE)
        if found is None:
            raise RplLaunchError("unstrung sunshine is not installed (not found on PATH); "
                                 "install unstrung or turn the external RPL option off")
        return found

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None \
            else None

    async def start(self, interfaces: list[str], *, root: bool,
                    dodag_id: ipaddress.IPv6Address | None,
                    prefix: ipaddress.IPv6Network) -> None:
        binary = self.find()
        await self.stop()
        if not interfaces:
            return  # nothing to run on yet; started again when a channel comes up
        self.argv = sunshine_argv(binary, interfaces, root=root, dodag_id=dodag_id, prefix=prefix)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "sunshine.log"
        with await asyncio.to_thread(log_path.open, "ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *netns.netns_argv(self.namespace, self.argv), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True)
        LOG.info("started %s (pid %d)", " ".join(self.argv), self._proc.pid)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await end_child(proc, STOP_GRACE)

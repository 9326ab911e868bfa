"""Run one node's charon inside its DULL namespace, watch it, restart it, stop it.

Several nodes share a machine in the lab (and a router may run a system strongSwan too), so
each charon gets a private directory bind-mounted over /run in its own mount namespace (`ip
netns exec` already makes one): charon's fixed /run/charon.pid, its strongswan.conf
(STRONGSWAN_CONF) and its VICI socket all live there, seen by acpd at `<run_dir>/charon/...`.
stderr goes to `<log_dir>/charon.log`. A charon left running by a previous acpd (crash, restart)
is adopted rather than started twice.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..netns import netns_argv
from .strongswan_conf import CharonSettings, render
from .xfrm_interface import flush_xfrm

LOG = logging.getLogger("acpd.channels.charon")
CHARON = "/usr/lib/ipsec/charon"
INSIDE_RUN = "/run"
# $1: the private directory, $2: charon. `mount -o bind` is understood by util-linux and busybox.
_WRAPPER = 'mount -o bind "$1" /run || exit 111; exec "$2"'


class CharonError(RuntimeError):
    """charon could not be started or does not answer on its VICI socket."""


def _vici_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _launch(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start charon's wrapper detached, its output appended to `log_path` (quick: a fork)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, start_new_session=True, close_fds=True)


def _is_charon(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "charon"
    except OSError:
        return False


def _why(log_path: Path) -> str:
    """The first failure charon logged in its last run (a missing plugin, mostly), for the
    error an operator sees first."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-40:]
    except OSError:
        return ""
    for line in lines:
        if "failed to load" in line or "unmet dependency" in line:
            return ": " + line.split("] ", 1)[-1].strip()
    return ""


class CharonSupervisor:
    """One charon per node: `start()` adopts or spawns it, then a task restarts it if it dies."""

    def __init__(self, netns: str, run_dir: Path, log_dir: Path, *,
                 settings: CharonSettings | None = None, charon: str = CHARON,
                 on_restart: Callable[[], Awaitable[None]] | None = None,
                 start_timeout: float = 15.0, backoff_min: float = 0.5,
                 backoff_max: float = 60.0) -> None:
        self.netns = netns
        self.dir = run_dir / "charon"
        self.log_path = log_dir / "charon.log"
        self.settings = settings or CharonSettings(vici_socket=f"{INSIDE_RUN}/charon.vici")
        self.charon = charon
        self.on_restart = on_restart
        self.start_timeout = start_timeout
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.pid: int | None = None
        self.adopted = False
        self.restarts = 0
        self.started_at: float | None = None
        self.last_exit: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def vici_socket(self) -> Path:
        """The VICI socket as acpd sees it."""
        inside = self.settings.vici_socket
        return self.dir / Path(inside).relative_to(INSIDE_RUN)

    async def start(self) -> None:
        """Adopt a running charon of this node, or start one; CharonError if neither works."""
        self._stopping = False
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        pid = self._running_pid()
        if pid is not None and _vici_answers(self.vici_socket):
            LOG.info("adopting running charon pid %d in %s", pid, self.netns)
            self.pid, self.adopted, self.started_at = pid, True, time.monotonic()
        else:
            if pid is not None:
                _terminate(pid, 3.0)
            await self._spawn()
        self._watch = asyncio.create_task(self._watch_loop(), name=f"charon-watch:{self.netns}")

    def _running_pid(self) -> int | None:
        try:
            pid = int((self.dir / "charon.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _is_charon(pid) else None

    async def _spawn(self) -> None:
        try:  # a charon that died (SIGKILL, crash) left its SAs and policies in the kernel
            await asyncio.get_running_loop().run_in_executor(None, flush_xfrm, self.netns)
        except OSError as exc:
            LOG.warning("flushing what the last charon left in %s: %s", self.netns, exc)
        (self.dir / "strongswan.conf").write_text(render(self.settings))
        with contextlib.suppress(FileNotFoundError):
            self.vici_socket.unlink()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "STRONGSWAN_CONF": f"{INSIDE_RUN}/strongswan.conf"}
        argv = netns_argv(self.netns, ["/bin/sh", "-c", _WRAPPER, "acp-charon",
                                       str(self.dir), self.charon])
        self._proc = _launch(argv, env, self.log_path)
        self.pid, self.adopted, self.started_at = self._proc.pid, False, time.monotonic()
        deadline = time.monotonic() + self.start_timeout
        while not _vici_answers(self.vici_socket):
            if self._proc.poll() is not None:
                raise CharonError(f"charon in {self.netns} exited with status "
                                  f"{self._proc.returncode} at start{_why(self.log_path)}"
                                  f" (see {self.log_path})")
            if time.monotonic() > deadline:
                _terminate(self._proc.pid, 2.0)
                raise CharonError(f"charon in {self.netns} opened no VICI socket within "
                                  f"{self.start_timeout:g} s (see {self.log_path})")
            await asyncio.sleep(0.05)
        LOG.info("charon pid %d started in %s", self.pid, self.netns)

    async def _wait_exit(self, pid: int) -> None:
        """Until `pid` is gone; a pidfd works for adopted (non-child) processes too."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:   # a kernel without pidfd (< 5.3): nothing to wait on but the pid
            while _is_charon(pid):  # noqa: ASYNC110 - no event exists to wait for
                await asyncio.sleep(0.5)
            return
        done: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not done.done():
                done.set_result(None)
        loop.add_reader(fd, exited)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _watch_loop(self) -> None:
        delay = self.backoff_min
        while not self._stopping:
            assert self.pid is not None
            await self._wait_exit(self.pid)
            if self._stopping:
                return
            status = self._proc.wait() if self._proc and self._proc.pid == self.pid else None
            self.last_exit = f"exited with status {status}" if status is not None else "gone"
            ran = time.monotonic() - (self.started_at or 0.0)
            delay = self.backoff_min if ran > self.backoff_max else delay
            LOG.warning("charon in %s %s; restarting in %.0f s", self.netns, self.last_exit, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
            if self._stopping:
                return
            try:
                await self._spawn()
            except CharonError as exc:
                LOG.error("%s", exc)
                self.started_at = time.monotonic()
                continue
            self.restarts += 1
            if self.on_restart is not None:
                try:
                    await self.on_restart()
                except Exception:
                    LOG.exception("charon restart handler failed")

    async def stop(self) -> None:
        """Stop watching and end charon (it deletes its SAs and policies on SIGTERM)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.pid is not None:
            await asyncio.get_running_loop().run_in_executor(None, _terminate, self.pid, 5.0)
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=1.0)
        self.pid, self._proc = None, None
        with contextlib.suppress(FileNotFoundError):
            self.vici_socket.unlink()

    def abandon(self) -> None:
        """Stop watching but leave charon running (what a crashed acpd leaves; for tests)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def status(self) -> dict[str, Any]:
        return {"pid": self.pid, "adopted": self.adopted, "restarts": self.restarts,
                "last_exit": self.last_exit, "vici_socket": str(self.vici_socket),
                "log": str(self.log_path)}


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` s; reaps it if it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not _is_charon(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)

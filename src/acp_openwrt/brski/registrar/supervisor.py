"""acpd's side of the registrar worker (worker.py): start it on demand, hand it connections,
ask it things, notice when it leaves or crashes.

`RegistrarWorker` imports nothing of cryptography, ssl or sqlite3: it is what keeps acpd free of
them (issue 19). A worker starts at the first need (a connection, a probe, a request) and
leaves after worker_protocol.IDLE_EXIT s idle; one that crashes is logged and counted, and the
next need starts a new one (never a lock-out: there is no back-off, a crash costs one
connection). The worker's stderr is read line by line into acpd's log ("LEVEL message"), so
its refusals and enrolments are in acpd's log as before; the last lines name a crash.

`run_once_sync` runs the one-shot bootstrap with the same conventions as the pledge's children
(pledge/idevid_check.py); `RegistrarWorker.start_checked` starts the first worker, which checks
what the registrar needs before it serves (worker.py `start`).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ...child_end import end_child
from ...logsafe import logsafe
from ..proxy.handover import HandoverChannel
from . import worker_protocol as wp

LOG = logging.getLogger("acpd.brski.registrar")
# Keep in step with worker.py (not imported: it is the child's module).
EXIT_UNUSABLE = 3
WORKER_MODULE = "acp_openwrt.brski.registrar.worker"
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))  # src/, above acp_openwrt/
REQUEST_TIMEOUT = 120.0   # s: a slow router's Python start, imports and an RSA/EC signature
ONE_SHOT_TIMEOUT = 180.0  # s for bootstrap (a new CA key) or the start's check
STOP_GRACE = 5.0
STDERR_TAIL = 5
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


class WorkerError(RuntimeError):
    """A request the worker refused or could not answer (one line)."""


def _argv(mode: str, settings: str, *extra: str) -> list[str]:
    """`python3 -m acp_openwrt.brski.registrar.worker MODE SETTINGS [FD]` (ps shows what it
    is), finding this package where acpd found it (_env)."""
    return [sys.executable, "-m", WORKER_MODULE, mode, settings, *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _relay(line: bytes, tail: collections.deque[str]) -> None:
    text = line.decode(errors="replace").rstrip()
    if not text:
        return
    tail.append(text)
    level, _, message = text.partition(" ")
    if level in _LEVELS:
        LOG.log(_LEVELS[level], "worker: %s", logsafe(message, 500))
    else:   # a traceback's lines, a print
        LOG.warning("worker: %s", logsafe(text, 500))


async def _relay_stderr(stream: asyncio.StreamReader, tail: collections.deque[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            return
        _relay(line, tail)


def run_once_sync(mode: str, settings: str, timeout: float = ONE_SHOT_TIMEOUT,
                  ) -> tuple[bool, str]:
    """A one-shot mode before acpd's event loop runs (the bootstrap in acpd.main): (True, its
    stdout) when it succeeded, else (False, the one-line reason)."""
    try:
        done = subprocess.run(_argv(mode, settings), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False, env=_env())
    except subprocess.TimeoutExpired:
        return False, f"registrar worker ({mode}) took longer than {timeout:.0f} s"
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    for line in done.stderr.splitlines():
        _relay(line, tail)
    return _verdict(mode, done.returncode, done.stdout, tail)


def _verdict(mode: str, status: int | None, out: bytes,
             tail: collections.deque[str]) -> tuple[bool, str]:
    """A one-shot worker's exit: 0 done (its stdout), EXIT_UNUSABLE a refusal (the reason on
    stdout), anything else a failure named by its last stderr line."""
    text = out.decode(errors="replace").strip()
    if status == 0:
        return True, text
    if status == EXIT_UNUSABLE:
        return False, text or f"registrar worker ({mode}) refused without a reason"
    return False, (f"registrar worker ({mode}) failed (exit {status}): "
                   f"{tail[-1] if tail else 'no output'}")


class _Life:
    """One worker process and its link."""

    def __init__(self, proc: asyncio.subprocess.Process, channel: HandoverChannel) -> None:
        self.proc, self.channel = proc, channel
        self.retiring = False
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.tasks: list[asyncio.Task[None]] = []
        self.waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # its hello (the state, once set up); an exception with the reason if it ended first
        self.hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()


class RegistrarWorker:
    """Starts, feeds and watches the worker; `on_state(pid, state, final)` gets each state
    report of worker `pid` (final: that worker has ended, state empty)."""

    def __init__(self, settings: str,
                 on_state: Callable[[int, dict[str, Any], bool], None]) -> None:
        self.settings, self.on_state = settings, on_state
        self._life: _Life | None = None       # the one new connections go to
        self._lives: set[_Life] = set()       # with the retiring ones still serving
        self._seq = itertools.count(1)
        self.starts = self.crashes = self.handed = 0
        self.last_exit: int | None = None
        self.last_error: str | None = None
        self.refuse_new: str | None = None
        self.stopping = False
        self._starting = asyncio.Lock()

    # -- life -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._life.proc.pid if self._life is not None else None

    async def ensure(self) -> _Life:
        """The running worker that takes new work, started if there is none."""
        if self.stopping:
            raise WorkerError("the registrar is stopping")
        async with self._starting:
            if self._life is not None and not self._life.retiring:
                return self._life
            return await self._start()

    async def start_checked(self, within: float = ONE_SHOT_TIMEOUT) -> tuple[bool, str]:
        """The registrar's start: a worker that checks what the registrar needs and then stays
        to serve (worker.py `start`). (True, "") once it said hello with its state, else
        (False, the reason: the registrar cannot run, or the worker failed)."""
        async with self._starting:
            life = await self._start("start")
        try:
            await asyncio.wait_for(asyncio.shield(life.hello), within)
        except TimeoutError:
            return False, f"registrar worker (start) took longer than {within:.0f} s"
        except WorkerError as exc:
            return False, str(exc)
        return True, ""

    async def _start(self, mode: str = "serve") -> _Life:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                *_argv(mode, self.settings, str(child.fileno())), pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_env())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        life = _Life(proc, HandoverChannel(parent, send=wp.send, recv=wp.receive_in_acpd))
        self._life = life
        self._lives.add(life)
        self.starts += 1
        LOG.info("registrar worker pid %d started", proc.pid)
        assert proc.stderr is not None
        loop = asyncio.get_running_loop()
        life.tasks = [loop.create_task(_relay_stderr(proc.stderr, life.tail)),
                      loop.create_task(self._listen(life))]
        if self.refuse_new is not None:
            await life.channel.send({"op": "refuse_new", "reason": self.refuse_new})
        return life

    def prestart(self) -> None:
        """Start a worker now if none runs (a join proxy probed: pledges are coming)."""
        if self.stopping or (self._life is not None and not self._life.retiring):
            return
        task = asyncio.get_running_loop().create_task(self.ensure())
        task.add_done_callback(_log_failure)

    async def _listen(self, life: _Life) -> None:
        try:
            while True:
                try:
                    received = await life.channel.receive()
                except wp.LinkError as exc:
                    LOG.warning("registrar worker sent a bad message: %s", logsafe(str(exc)))
                    continue
                if received is None:
                    return
                msg, _fds = received
                op = msg["op"]
                if op in ("hello", "state") and isinstance(msg.get("state"), dict):
                    self.on_state(life.proc.pid, msg["state"], False)
                    if op == "hello" and not life.hello.done():
                        life.hello.set_result(msg["state"])
                elif op == "reply":
                    waiter = life.waiters.pop(msg.get("seq"), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(msg)
                elif op == "idle":
                    life.retiring = True
                    if self._life is life:
                        self._life = None
                    await life.channel.send({"op": "exit"})
        except OSError as exc:
            LOG.warning("registrar worker link: %s", exc)
        finally:
            await self._ended(life)

    async def _ended(self, life: _Life) -> None:
        life.channel.close()
        if self._life is life:
            self._life = None
        for waiter in life.waiters.values():
            if not waiter.done():
                waiter.set_exception(WorkerError("the registrar worker ended"))
        proc = life.proc
        await end_child(proc, STOP_GRACE, terminate=False)  # told to leave, or gone already
        await asyncio.gather(life.tasks[0], return_exceptions=True)  # the last stderr lines
        self._lives.discard(life)
        self.last_exit = proc.returncode
        if proc.returncode == 0:
            LOG.info("registrar worker pid %d left (idle)", proc.pid)
            self._no_hello(life, "the registrar worker left")
            self.on_state(proc.pid, {}, True)
            return
        if self.stopping and proc.returncode in (-15, -9):
            self._no_hello(life, "the registrar is stopping")
            self.on_state(proc.pid, {}, True)
            return
        if proc.returncode == EXIT_UNUSABLE:
            reason = life.tail[-1] if life.tail else "no reason given"
            out = await proc.stdout.read() if proc.stdout is not None else b""
            reason = out.decode(errors="replace").strip() or reason
            if not life.hello.done():   # the start's check refused: the registrar cannot run
                self._no_hello(life, reason)
                self.last_exit = proc.returncode
                self.on_state(proc.pid, {}, True)
                return
        else:
            reason = life.tail[-1] if life.tail else "no output"
        self.crashes += 1
        self._no_hello(life, f"registrar worker failed (exit {proc.returncode}): {reason}")
        self.last_error = f"exit {proc.returncode}: {logsafe(reason, 300)}"
        LOG.error("registrar worker pid %d failed (%s); the next connection starts another",
                  proc.pid, self.last_error)
        self.on_state(proc.pid, {}, True)

    @staticmethod
    def _no_hello(life: _Life, reason: str) -> None:
        if not life.hello.done():
            life.hello.set_exception(WorkerError(reason))
            life.hello.exception()   # retrieved: nobody may be waiting for it

    # -- work -----------------------------------------------------------------------------
    async def hand_over(self, conn: socket.socket) -> None:
        """Give an accepted connection to the worker (closed here either way)."""
        try:
            life = await self.ensure()
            await life.channel.send({"op": "connection"}, (conn.fileno(),))
            self.handed += 1
        finally:
            conn.close()

    async def request(self, what: str, args: dict[str, Any] | None = None,
                      within: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """The worker's result for `what` (worker_protocol.REQUESTS); WorkerError otherwise."""
        life = await self.ensure()
        seq = next(self._seq)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        life.waiters[seq] = waiter
        try:
            await life.channel.send({"op": "request", "seq": seq, "what": what,
                                     "args": args or {}})
            answer = await asyncio.wait_for(waiter, within)
        except TimeoutError:
            raise WorkerError(f"the registrar worker did not answer {what} within "
                              f"{within:.0f} s") from None
        except OSError as exc:
            raise WorkerError(f"the registrar worker is unreachable: {exc}") from None
        finally:
            life.waiters.pop(seq, None)
        if "error" in answer:
            raise WorkerError(str(answer["error"]))
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def set_refuse_new(self, reason: str | None) -> None:
        self.refuse_new = reason
        for life in list(self._lives):
            with contextlib.suppress(OSError):
                await life.channel.send({"op": "refuse_new", "reason": reason})

    async def stop(self) -> None:
        """Terminate every worker and wait for them (clean shutdown of acpd or the part)."""
        async with self._starting:   # a start under way finishes first, then is stopped too
            self.stopping = True
        for life in list(self._lives):
            if life.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    life.proc.terminate()
        for life in list(self._lives):
            await asyncio.gather(*life.tasks, return_exceptions=True)
        self._life = None

    def status(self) -> dict[str, Any]:
        return {"pid": self.pid, "running": self._life is not None,
                "processes": len(self._lives), "starts": self.starts, "crashes": self.crashes,
                "connections": self.handed, "last_exit": self.last_exit,
                "last_error": self.last_error}


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        LOG.error("registrar worker did not start: %s", task.exception())



class WorkerReports:
    """What the registrar's check and its workers reported, as acpd's status shows it: the
    latest value of each summary field (`summary`); counters, refusals and status reports
    added up over the workers that ended, plus each running worker's own (by pid)."""

    KEEP = 16   # refusals and status reports kept of the workers that ended
    SHOWN = 8   # of them, with the running workers', in the status

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}
        self._counters: collections.Counter[str] = collections.Counter()
        self._ended: dict[str, collections.deque[dict[str, Any]]] = {
            key: collections.deque(maxlen=self.KEEP)
            for key in ("recent_refusals", "recent_status")}
        self._live: dict[int, dict[str, Any]] = {}

    def on_state(self, pid: int, state: dict[str, Any], final: bool) -> None:
        """A report of worker `pid` (0: the one-shot check); `final`: that worker ended."""
        if final:
            last = self._live.pop(pid, None)
            if last is not None:
                self._counters.update(last.get("counters") or {})
                for key, kept in self._ended.items():
                    kept.extend(last.get(key) or [])
            return
        if pid:
            self._live[pid] = state
        for key, value in state.items():
            if key == "counters" or key in self._ended:
                continue
            if value is not None or key not in self.summary:
                self.summary[key] = value

    def counters(self) -> dict[str, int]:
        total = collections.Counter(self._counters)
        for state in self._live.values():
            total.update(state.get("counters") or {})
        return dict(total)

    def recent(self, key: str) -> list[Any]:
        """The last refusals (`recent_refusals`) or status reports (`recent_status`)."""
        out = list(self._ended[key])
        for state in self._live.values():
            out += state.get(key) or []
        return out[-self.SHOWN:]

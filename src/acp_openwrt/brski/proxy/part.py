"""acpd's side of the join proxy: DULL listening sockets, the unprivileged process, AN_Proxy events.

`JoinProxyPart(ctx)` is active only while the node has an LDevID. Per adopted DULL link it
binds a TCP listener to the link-local address (made in DULL, where the unprivileged proxy can
never open anything), starts `acp_openwrt.brski.proxy.process` (through entry.py) in the ACP
namespace as an unprivileged user, and hands the sockets over (handover.py). acpd keeps its own
copy of every listener, so a proxy that dies is restarted (with backoff) on the same ports and
pledges' queued connections survive. Registrars come in as `RegistrarHeard` events (the ACP
GRASP part's AN_join_registrar floods, and the registrar part of this node); the proxy reports
whether it can relay, and this part publishes `AnProxyStart` / `AnProxyStop` for acpd's DULL
flooder: AN_Proxy is flooded only while a registrar is known.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ... import netns
from ...child_end import end_child
from ...events import (
    AcpRoutesChanged,
    AnProxyStart,
    AnProxyStop,
    IdentityChanged,
    LinkAdopted,
    LinkReleased,
    RegistrarHeard,
)
from ...logsafe import logsafe
from ...node_context import NodeContext, Part
from . import handover as ho
from .registrars import RegistrarLocator, RegistrarTable, ipv6_normal
from .relay import RelayLimits

__all__ = ["JoinProxyPart", "ProxySettings"]

LOG = logging.getLogger("acpd.join_proxy")
HELLO_TIMEOUT = 60.0  # a Python start on a loaded small box (or a TCG guest) can take 15 s
STATUS_TIMEOUT = 2.0
STOP_GRACE = 2.0
PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # src/, above acp_openwrt/


@dataclass(frozen=True)
class ProxySettings:
    """UCI: join_proxy_user, join_proxy_group, join_proxy_port and the RelayLimits options."""
    user: str | None = "nobody"
    group: str | None = None
    port: int = 0               # 0: the kernel picks one per interface (it is in the flood)
    limits: RelayLimits = field(default_factory=RelayLimits)
    backlog: int = 16
    restart_min: float = 0.5
    restart_max: float = 30.0
    python: str = sys.executable
    log_level: str = "info"


def settings_from_config(config: Any) -> ProxySettings:
    """ProxySettings from the join_proxy_* UCI options."""
    return ProxySettings(
        user=config.join_proxy_user, group=config.join_proxy_group, port=config.join_proxy_port,
        log_level=config.log_level,
        limits=RelayLimits(max_connections=config.join_proxy_max_connections,
                           max_per_pledge=config.join_proxy_max_per_pledge,
                           idle_timeout=float(config.join_proxy_idle_timeout)))


def _open_log(log_dir: Path) -> BinaryIO:
    log_dir.mkdir(parents=True, exist_ok=True)
    return open(log_dir / "join-proxy.log", "ab")


def _make_listener(dull_ns: str, link: LinkAdopted, port: int, backlog: int) -> socket.socket:
    sock = netns.socket_in(dull_ns, socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((link.link_local.split("%")[0], port, 0, link.dull_ifindex))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class JoinProxyPart(Part):
    name = "join_proxy"

    def __init__(self, ctx: NodeContext, settings: ProxySettings | None = None) -> None:
        if settings is None:
            settings = settings_from_config(ctx.config)
        self.ctx = ctx
        self.settings = settings
        self.active = False
        self.restarts = 0
        self._links: dict[str, LinkAdopted] = {}
        self._listeners: dict[str, socket.socket] = {}
        self._confirmed: dict[str, tuple[str, int]] = {}
        self._announced: dict[str, AnProxyStart] = {}
        self._registrars = RegistrarTable()
        self._state: ho.RegistrarState | None = None
        self._channel: ho.HandoverChannel | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seq = itertools.count(1)
        self._unsubscribe: list[Any] = []
        self._started = False
        self.last_exit: int | None = None
        ctx.control.register("proxy", self._control)
        # Subscribed when built, not started: the coordinator builds every part first, so we
        # also hear the links adopted while the parts before us start.
        self._subscribe()

    def _subscribe(self) -> None:
        bus = self.ctx.bus
        self._unsubscribe = [bus.subscribe(LinkAdopted, self._on_adopted),
                             bus.subscribe(LinkReleased, self._on_released),
                             bus.subscribe(IdentityChanged, self._on_identity),
                             bus.subscribe(RegistrarHeard, self._on_registrar),
                             bus.subscribe(AcpRoutesChanged, self._on_routes)]

    # -- service life ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self._unsubscribe:
            self._subscribe()
        self._started = True
        if self.ctx.identity is not None:
            await self._activate()
        else:
            LOG.info("no LDevID: join proxy stays off")

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self._started = False
        self.active = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self._confirmed.clear()
        self._update_announcements()
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _activate(self) -> None:
        self.active = True
        for link in list(self._links.values()):
            await self._open(link)
        self._supervisor = asyncio.create_task(self._supervise())

    # -- what the rest of acpd tells us ---------------------------------------------------
    def registrar_heard(self, address: str, port: int, ttl_ms: int) -> None:
        """An AN_join_registrar flood (ACP GRASP) announced this registrar; ttl 0 withdraws it."""
        try:
            locator = RegistrarLocator.checked(address, port)
        except ValueError as exc:
            LOG.warning("ignoring registrar: %s", exc)
            return
        local = self._is_own_address(locator.address)
        self._registrars.heard(locator, ttl_ms, time.monotonic(), local=local)
        self._post(ho.Registrar(locator.address, locator.port, max(0, ttl_ms), local))

    def _is_own_address(self, address: str) -> bool:
        """The registrar runs on this node (its address is our ACP address): preferred."""
        own = (self.ctx.identity or {}).get("acp_address")
        try:
            return bool(own) and ipv6_normal(str(own)) == address
        except ValueError:
            return False

    def _on_registrar(self, event: RegistrarHeard) -> None:
        self.registrar_heard(event.address, event.port, event.ttl_ms)

    def _on_routes(self, _event: AcpRoutesChanged) -> None:
        """A path across the ACP may exist now: a registrar the proxy is still probing may
        answer, so it probes at once (while none is known; otherwise the proxy ignores it)."""
        if self._state is None or not self._state.known:
            self._post(ho.Reprobe())

    def _on_adopted(self, event: LinkAdopted) -> None:
        self._links[event.dull_ifname] = event
        if self.active:
            self._spawn(self._open(event))

    def _on_released(self, event: LinkReleased) -> None:
        self._links.pop(event.dull_ifname, None)
        self._close(event.dull_ifname)

    def _on_identity(self, _event: IdentityChanged) -> None:
        if self.ctx.identity is not None and not self.active and self._started:
            self._spawn(self._activate())

    # -- listeners ------------------------------------------------------------------------
    async def _open(self, link: LinkAdopted) -> None:
        self._close(link.dull_ifname)
        try:
            sock = await asyncio.to_thread(_make_listener, self.ctx.dull_ns, link,
                                           self.settings.port, self.settings.backlog)
        except OSError as exc:
            LOG.warning("join proxy: cannot listen on %s [%s]:%d: %s", link.dull_ifname,
                        link.link_local, self.settings.port, exc.strerror or exc)
            return
        if self._links.get(link.dull_ifname) != link or not self.active:
            sock.close()  # released (or stopped) while we were binding
            return
        self._listeners[link.dull_ifname] = sock
        self._post_listen(link.dull_ifname)

    def _post_listen(self, ifname: str) -> None:
        sock = self._listeners[ifname]
        address, port = sock.getsockname()[:2]
        self._post(ho.Listen(ifname, str(address).split("%")[0], port), (sock.fileno(),))

    def _close(self, ifname: str) -> None:
        sock = self._listeners.pop(ifname, None)
        self._confirmed.pop(ifname, None)
        self._update_announcements()
        if sock is not None:
            self._post(ho.Unlisten(ifname))
            sock.close()

    # -- announcements --------------------------------------------------------------------
    def announcements(self) -> list[AnProxyStart]:
        """Where AN_Proxy should be flooded right now."""
        return list(self._announced.values())

    def _update_announcements(self) -> None:
        wanted: dict[str, AnProxyStart] = {}
        if self._state is not None and self._state.known:
            for ifname, (_address, port) in self._confirmed.items():
                link = self._links.get(ifname)
                if link is not None and ifname in self._listeners:
                    wanted[ifname] = AnProxyStart(ifname, link.link_local.split("%")[0], port)
        for ifname, old in list(self._announced.items()):
            if wanted.get(ifname) != old:
                del self._announced[ifname]
                self.ctx.bus.publish(AnProxyStop(ifname))
        for ifname, start in wanted.items():
            if ifname not in self._announced:
                self._announced[ifname] = start
                self.ctx.bus.publish(start)

    # -- the proxy process ----------------------------------------------------------------
    def _post(self, msg: ho.Message, fds: tuple[int, ...] = ()) -> None:
        """Send now if a proxy is connected; otherwise it is re-sent when one (re)starts."""
        if self._channel is None:
            return
        try:
            ho.send_message(self._channel.sock, msg, fds)
        except BlockingIOError:  # tiny messages; only a wedged proxy fills the buffer
            LOG.warning("join proxy is not reading; dropped %s", msg.op)
        except OSError as exc:
            LOG.warning("join proxy: cannot send %s: %s", msg.op, exc.strerror or exc)

    def _argv(self, fd: int) -> list[str]:
        s, lim = self.settings, self.settings.limits
        # -S: no site module. The proxy needs only the standard library and this package
        # (PYTHONPATH), so the unprivileged relay runs no site-packages .pth hooks, and
        # what they import (MBs on some systems) stays out of its memory; entry.py keeps
        # ssl out too.
        argv = [s.python, "-S", "-m", "acp_openwrt.brski.proxy.entry", "--handover-fd", str(fd),
                "--max-connections", str(lim.max_connections),
                "--max-per-pledge", str(lim.max_per_pledge),
                "--idle-timeout", str(lim.idle_timeout),
                "--connect-timeout", str(lim.connect_timeout), "--log-level", s.log_level]
        if os.geteuid() == 0:
            argv += ["--netns", self.ctx.acp_ns]
            if s.user is not None:
                argv += ["--user", s.user]
            if s.group is not None:
                argv += ["--group", s.group]
        return argv

    async def _supervise(self) -> None:
        backoff = self.settings.restart_min
        while self.active:
            started = time.monotonic()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep supervising: a restart is the remedy
                LOG.warning("join proxy: %s", exc)
            if not self.active:
                return
            if time.monotonic() - started > self.settings.restart_max:
                backoff = self.settings.restart_min
            LOG.warning("join proxy exited (status %s); restarting in %gs", self.last_exit, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.restart_max)
            self.restarts += 1

    async def _run_once(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        # its own log, like every process acpd starts in a namespace (opened before it drops
        # privileges, so the unprivileged proxy needs no write access to log_dir)
        log = await asyncio.to_thread(_open_log, Path(self.ctx.log_dir))
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(child.fileno()), pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
            log.close()
        self._proc = proc
        channel = ho.HandoverChannel(parent)
        try:
            received = await asyncio.wait_for(channel.receive(), HELLO_TIMEOUT)
            if received is None or not isinstance(received[0], ho.Hello):
                raise RuntimeError("proxy process ended or spoke before saying hello")
            hello = received[0]
            if os.geteuid() == 0 and hello.uid == 0:
                raise RuntimeError("proxy process runs as root; killing it")
            LOG.info("join proxy pid %d running as uid %d", proc.pid, hello.uid)
            self._channel = channel
            for ifname in list(self._listeners):
                self._post_listen(ifname)
            for locator, ttl_ms in self._registrars.remaining(time.monotonic()):
                self._post(ho.Registrar(locator.address, locator.port, ttl_ms,
                                        self._registrars.is_local(locator)))
            while True:
                try:
                    received = await channel.receive()
                except ho.HandoverError as exc:
                    LOG.warning("join proxy sent a bad message: %s", logsafe(exc))
                    continue
                if received is None:
                    return
                self._from_proxy(received[0])
        finally:
            self._channel = None
            self._state = None
            self._confirmed.clear()
            self._update_announcements()
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("join proxy went away"))
            self._waiters.clear()
            channel.close()
            await self._end(proc)

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        self.last_exit = await end_child(proc, STOP_GRACE)
        self._proc = None

    def _from_proxy(self, msg: ho.Message) -> None:
        if isinstance(msg, ho.Listening):
            if msg.ifname in self._listeners:
                self._confirmed[msg.ifname] = (msg.address, msg.port)
        elif isinstance(msg, ho.ListenFailed):
            LOG.warning("join proxy cannot serve %s: %s", logsafe(msg.ifname), logsafe(msg.reason))
            self._confirmed.pop(msg.ifname, None)
        elif isinstance(msg, ho.RegistrarState):
            if msg.known != (self._state.known if self._state else False):
                LOG.info("join proxy: registrar %s", logsafe(f"[{msg.address}]:{msg.port}")
                         if msg.known else "lost")
            self._state = msg
        elif isinstance(msg, ho.StatusReply):
            waiter = self._waiters.pop(msg.seq, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg.status)
            return
        else:
            LOG.warning("join proxy sent %s, which only acpd may send", logsafe(msg.op))
            return
        self._update_announcements()

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = self._state
        return {
            "active": self.active,
            "pid": self._proc.pid if self._proc is not None else None,
            "connected": self._channel is not None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "user": self.settings.user,
            "registrar": ({"address": state.address, "port": state.port}
                          if state is not None and state.known else None),
            "registrars_heard": self._registrars.status(time.monotonic()),
            "listeners": [{"ifname": ifname, "address": sock.getsockname()[0].split("%")[0],
                           "port": sock.getsockname()[1], "serving": ifname in self._confirmed}
                          for ifname, sock in self._listeners.items()],
            "announcing": [{"ifname": a.dull_ifname, "address": a.address, "port": a.port}
                           for a in self._announced.values()],
        }

    async def proxy_status(self) -> dict[str, Any] | None:
        """The proxy process's own view (connections, byte counters); None if it is not up."""
        if self._channel is None:
            return None
        seq = next(self._seq)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[seq] = waiter
        self._post(ho.StatusRequest(seq))
        try:
            return await asyncio.wait_for(waiter, STATUS_TIMEOUT)
        except (TimeoutError, ConnectionError):
            return None
        finally:
            self._waiters.pop(seq, None)

    async def _control(self, _request: dict[str, Any]) -> dict[str, Any]:
        out = self.status()
        proxy = await self.proxy_status()
        out["proxy"] = proxy
        if proxy is not None:
            out["connections"] = proxy.get("connections", [])
            out["totals"] = proxy.get("totals", {})
        return out

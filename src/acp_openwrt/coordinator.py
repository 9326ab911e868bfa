"""The node: namespaces, the control socket and acpd's parts, started and stopped in order.

acpd.main() reads config and identity (pure), then hands them to Node.run(). Node creates the
DULL and ACP namespaces unless they exist (then it adopts them), starts each part, serves the
control socket, and on stop undoes it all in reverse: parts remove what they made, and the
namespaces go if this run created them (unless keep is set, for a restart without disruption).

The parts talk by events on `ctx.bus` and typed ports on the context (docs/parts.md). Node
calls only the `Service` hooks, never probes a part: it fills `ctx.ports` from every part's
`ports()` when it builds them, clears a part's ports before stopping it (or when it failed to
start), sets `keep_on_stop` before a restart, and calls `reload_identity()` after a renewal.
After enrolment (a new identity) acpd runs itself anew (`reexec`, exec in the same process), so
the enrolled node does not carry the pledge's BRSKI work in memory.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import AcpConfig
from .control.server import ControlServer, RequestError
from .events import EventBus, IdentityChanged
from .identity.summary import load_identity_summary
from .netns import call_in, create_namespace, list_namespaces, remove_namespace
from .node_context import NodeContext, Ports, Service

if TYPE_CHECKING:  # the control API's types: 2 MB of TypedDicts acpd needs no instance of
    from .control.api import ReloadAnswer

LOG = logging.getLogger("acpd")
NAMESPACE_LEDGER = "namespaces"
# What acpd run anew after enrolment (Node.reexec) carries over: "<rebuilds> <started>", the
# second on the system-wide monotonic clock, so that status's rebuilds and uptime go on.
CARRIED_ENV = "ACPD_CARRIED"


def _lo_up() -> None:
    from pyroute2 import IPRoute

    from .links.netlink import ensure_loopback_up
    with IPRoute() as ipr:
        ensure_loopback_up(ipr)


def part_names(config: AcpConfig, identity: dict[str, Any] | None) -> list[str]:
    """Which parts run, in start order, as `module:Class` under acp_openwrt.

    All parts are built before any starts, so parts that subscribe when built hear everything;
    parts that subscribe in start() must start before the parts whose events they need: RPL and
    the ACP GRASP before channels (ChannelUp), channels before discovery (AdjacencyUp), the ACP
    GRASP before the registrar (it floods through it). The join proxy starts right after the
    links: its process's Python start-up (seconds on a small box) then overlaps charon's, and
    it has nothing to announce before channels and the ACP GRASP bring a registrar anyway.
    A part whose module is not installed (a trimmed OpenWrt build) is skipped with a log line
    rather than stopping the node.
    """
    parts = ["links.part:LinkPart"]
    if config.join_proxy:
        parts.append("brski.proxy.part:JoinProxyPart")  # switches on with an LDevID
    if identity is not None:
        parts.append("rpl.part:RplPart")
        if config.connect:
            parts.append("connect.part:ConnectPart")
        # acpmap: before channels, so it hears every ChannelUp (it answers map requests)
        parts += ["grasp.part:AcpGraspPart", "acpmap.part:MapPart", "channels.part:ChannelPart"]
    if identity is not None:  # after channels, which hear its RevocationUpdated at its start
        parts.append("revocation.part:RevocationPart")
    parts.append("discovery.part:DiscoveryPart")
    if config.registrar:
        if identity is not None:
            parts.append("brski.registrar.part:RegistrarPart")
    else:
        parts.append("brski.pledge.part:PledgePart")  # enrols, then renews the LDevID
    parts.append("control.part:UbusPart")
    return parts


class Node:
    def __init__(self, config: AcpConfig, identity: dict[str, Any] | None,
                 keep: bool = False, reexec: Callable[[], None] | None = None) -> None:
        self.config = config
        self.keep = keep
        self.reexec = reexec  # runs acpd anew in this process (exec); None: rebuild in place
        socket_path = config.control_socket
        assert socket_path is not None  # AcpConfig derives it from run_dir when not given
        self.ctx = NodeContext(config=config, bus=EventBus(),
                               control=ControlServer(socket_path), identity=identity)
        self.services: list[Service] = []
        self.failed: dict[str, str] = {}
        self.created_namespaces: list[str] = []
        self.started, self.rebuilds = _carried_over()
        self._rebuilding: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._parts_lock = asyncio.Lock()  # one start/stop/restart of the parts at a time
        self.ctx.control.register("status", self._status)
        self.ctx.control.register("reload", self._reload)
        self._own_commands = self.ctx.control.commands()

    def _ensure_namespaces(self) -> None:
        """Create DULL and ACP, or adopt them. A ledger in run_dir remembers which ones an
        earlier acpd created, so after a crash they are still removed on the next clean stop."""
        existing = set(list_namespaces())
        ledger = self.config.run_dir / NAMESPACE_LEDGER
        ours = set(ledger.read_text().split()) if ledger.exists() else set()
        for name in (self.ctx.dull_ns, self.ctx.acp_ns):
            if name in existing:
                LOG.info("adopting existing namespace %s", name)
                if name in ours:
                    self.created_namespaces.append(name)
            else:
                create_namespace(name)
                self.created_namespaces.append(name)
                LOG.info("created namespace %s", name)
            ledger.write_text("\n".join(self.created_namespaces) + "\n")
            call_in(name, _lo_up)
            if name == self.ctx.acp_ns:
                call_in(name, _write_sysctl, "net/ipv6/conf/all/forwarding", "1")

    async def start(self) -> None:
        for directory in (self.config.run_dir, self.config.log_dir):
            os.makedirs(directory, exist_ok=True)
        self._ensure_namespaces()
        await self.ctx.control.start()
        async with self._parts_lock:  # the control socket already answers: `reload` waits
            await self._start_parts()

    async def _start_parts(self) -> None:
        self.ctx.bus.subscribe(IdentityChanged, self._identity_changed)
        built: list[Service] = []
        for spec in part_names(self.config, self.ctx.identity):
            module_name, _, class_name = spec.partition(":")
            try:
                module = importlib.import_module(f"{__package__}.{module_name}")
            except ImportError as exc:
                LOG.warning("part %s not available: %s", module_name, exc)
                continue
            service: Service = getattr(module, class_name)(self.ctx)
            try:
                self.ctx.ports = self.ctx.ports.merged(service.ports())
            except ValueError as exc:  # two parts claim one port: a bug in part_names
                LOG.error("%s: %s", service.name, exc)
            built.append(service)
        for service in built:
            service.prepare()  # slow independent work (charon) overlaps the starts before it
        pending = list(built)
        try:
            while pending:
                service = pending[0]
                try:
                    await service.start()
                except Exception as exc:  # one broken part must not take the node down
                    LOG.exception("%s did not start", service.name)
                    self.failed[service.name] = f"{type(exc).__name__}: {exc}"
                    pending.pop(0)
                    await self._stop_one(service)
                    continue
                pending.pop(0)  # (one cancelled mid-start stays pending: stopped below)
                self.services.append(service)
                LOG.debug("started %s", service.name)
        except BaseException:  # cancelled (acpd stopping mid-rebuild): undo what prepare began
            for service in pending:
                await self._stop_one(service, keep=True)
            raise
        LOG.info("node up: %s", ", ".join(s.name for s in self.services))

    async def _stop_one(self, service: Service, keep: bool = False) -> None:
        self.ctx.ports = self.ctx.ports.without(service)  # no part asks a stopping part
        try:
            if keep:
                service.keep_on_stop = True
            began = time.monotonic()
            await service.stop()
            LOG.debug("stopped %s (%.0f ms)", service.name, (time.monotonic() - began) * 1000)
        except Exception:
            LOG.exception("stopping %s failed", service.name)

    async def _stop_parts(self, keep: bool) -> None:
        for service in reversed(self.services):
            await self._stop_one(service, keep)
        self.services.clear()
        self.failed.clear()
        self.ctx.ports = Ports()  # also those of parts built but never started

    def _identity_changed(self, event: IdentityChanged) -> None:
        """An LDevID was stored (enrolment or renewal): with a new acp-node-name the node
        rebuilds its parts (links and ACP connect stay, as in a restart with --keep)."""
        cert = Path(event.cert_path)
        config = dataclasses.replace(self.config, ldevid_cert=cert,
                                     ldevid_key=Path(event.key_path),
                                     trust_anchors=Path(event.trust_anchors_path))
        try:
            identity = load_identity_summary(cert)
        except ValueError as exc:
            LOG.error("new LDevID %s unusable: %s", event.cert_path, exc)
            return
        old = (self.ctx.identity or {}).get("acp_node_name")
        if identity["acp_node_name"] == old:
            LOG.info("LDevID renewed; identity unchanged (%s)", old)
            self.config = self.ctx.config = config
            for service in self.services:
                self._spawn(service.reload_identity(), f"reload {service.name}")
            return
        report = event.report  # the enrollstatus report: sent off the restart's path
        if self._rebuilding is None or self._rebuilding.done():
            if self.reexec is not None:
                work = self._run_anew(config, identity, report)
            else:
                work = self._rebuild(config, identity)
                if report is not None:
                    self._spawn(report.send(), "enrollstatus")
            self._rebuilding = asyncio.get_running_loop().create_task(work, name="rebuild")
        elif report is not None:
            self._spawn(report.send(), "enrollstatus")

    async def _run_anew(self, config: AcpConfig, identity: dict[str, Any],
                        report: Any = None) -> None:
        """A new identity (enrolment): acpd runs itself anew in this process (exec: the same
        pid for procd; namespaces and links adopted as after `acpd --keep`) instead of
        rebuilding its parts in place, which would keep the pledge's BRSKI work (TLS, CMS, the
        voucher: 12-17 MB of modules) for the node's whole life. If exec fails, the parts are
        rebuilt here. The enrolment's enrollstatus `report` (a PendingReport) goes from a
        detached copy of this process made just before the exec, when the parts have stopped
        (issue 19: it took 0.35-0.55 s of the restart under TCG); here if no copy can be made."""
        assert self.reexec is not None
        async with self._parts_lock:
            LOG.info("identity %s: acpd starts anew, without the pledge's memory",
                     identity["acp_node_name"])
            await self._stop_parts(keep=True)
            await self.ctx.control.stop()
            for handler in logging.getLogger().handlers:
                handler.flush()
            if report is not None and not report.send_detached():
                await report.send()
            os.environ[CARRIED_ENV] = f"{self.rebuilds + 1} {self.started!r}"
            try:
                self.reexec()  # returns only if it failed
            except OSError as exc:
                LOG.error("could not run acpd anew (%s): restarting the parts in place", exc)
            os.environ.pop(CARRIED_ENV, None)
            await self.ctx.control.start()
        await self._rebuild(config, identity)

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                LOG.error("%s failed: %s", what, t.exception())
        task.add_done_callback(done)

    def _reload(self, _request: dict[str, Any]) -> ReloadAnswer:
        """Control `reload` (`ubus call acp reload`): read the config file again; if it changed,
        restart the parts with it (links stay). A bad file changes nothing and says why."""
        from .config import ConfigError, load_config
        from .config.identity_files import with_identity_files
        if self.config.source is None:
            raise RequestError("acpd runs without a config file (-c): nothing to reload")
        try:
            config = with_identity_files(load_config(Path(self.config.source)))
        except ConfigError as exc:
            raise RequestError(f"not reloaded: {exc}") from exc
        except OSError as exc:
            raise RequestError(f"not reloaded: {self.config.source}: {exc.strerror}") from exc
        if config == self.config:
            return {"reloaded": False, "reason": "configuration unchanged"}
        fixed = ("namespace_dull", "namespace_acp", "run_dir", "control_socket", "enabled")
        changed = [name for name in fixed if getattr(config, name) != getattr(self.config, name)]
        if changed:
            raise RequestError(f"not reloaded: {', '.join(changed)} changed; restart acpd")
        try:
            identity = (load_identity_summary(config.ldevid_cert)
                        if config.ldevid_cert is not None and config.ldevid_cert.exists() else None)
        except ValueError as exc:
            raise RequestError(f"not reloaded: ldevid_cert {config.ldevid_cert}: {exc}") from exc
        if self._rebuilding is not None and not self._rebuilding.done():
            raise RequestError("a restart of the parts is already under way; try again")
        self._rebuilding = asyncio.get_running_loop().create_task(
            self._rebuild(config, identity), name="reload")
        return {"reloaded": True}

    async def _rebuild(self, config: AcpConfig, identity: dict[str, Any] | None) -> None:
        async with self._parts_lock:
            LOG.info("restarting the parts (identity %s)",
                     identity["acp_node_name"] if identity else "none: not enrolled")
            await self._stop_parts(keep=True)
            self.config = config
            self.ctx.config, self.ctx.identity = config, identity
            self.ctx.bus = EventBus()
            self.ctx.control.keep_only(self._own_commands)
            self.rebuilds += 1
            await self._start_parts()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._rebuilding is not None and not self._rebuilding.done():
            self._rebuilding.cancel()
            try:
                await self._rebuilding
            except (asyncio.CancelledError, Exception):
                pass
        async with self._parts_lock:
            await self._stop_parts(self.keep)
        await self.ctx.control.stop()
        if not self.keep:
            for name in reversed(self.created_namespaces):
                try:
                    remove_namespace(name)
                    LOG.info("removed namespace %s", name)
                except OSError as exc:
                    LOG.error("could not remove namespace %s: %s", name, exc)
            (self.config.run_dir / NAMESPACE_LEDGER).unlink(missing_ok=True)
        self.created_namespaces.clear()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()

    def _status(self, _req: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        identity = self.ctx.identity
        out: dict[str, Any] = {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "identity": identity,
            "enrolled": identity is not None,
            "namespaces": {"dull": self.ctx.dull_ns, "acp": self.ctx.acp_ns},
            "parts": [s.name for s in self.services],
            "failed_parts": dict(self.failed),
            "rebuilds": self.rebuilds,
            "control": self.ctx.control.status(),
        }
        for service in self.services:
            out[service.name] = service.status()
        return out


def _carried_over() -> tuple[float, int]:
    """(started, rebuilds): fresh, or what the acpd this one replaced carried over."""
    carried = os.environ.pop(CARRIED_ENV, "").split()
    try:
        return float(carried[1]), int(carried[0])
    except (IndexError, ValueError):
        return time.monotonic(), 0


def _write_sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)

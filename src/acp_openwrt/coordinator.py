"""The node: namespaces, the control socket and acpd's parts, started and stopped in order.

acpd.main() reads config and identity (pure), then hands them to Node.run(). Node creates the
DULL and ACP namespaces unless they exist (then it adopts them), starts each part, serves the
control socket, and on stop undoes it all in reverse: parts remove what they made, and the
namespaces go if this run created them (unless keep is set, for a restart without disruption).
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from typing import Any

from . import __version__
from .config import AcpConfig
from .control.server import ControlServer
from .events import EventBus
from .netns import call_in, create_namespace, list_namespaces, remove_namespace
from .node_context import NodeContext, Service

LOG = logging.getLogger("acpd")
NAMESPACE_LEDGER = "namespaces"


def _lo_up() -> None:
    from .links.netlink import ensure_loopback_up
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ensure_loopback_up(ipr)


def part_names(config: AcpConfig, identity: dict[str, Any] | None) -> list[str]:
    """Which parts run, in start order, as `module:Class` under acp_openwrt.

    A part whose module is not installed (e.g. a trimmed OpenWrt build) is skipped with a log
    line rather than stopping the node.
    """
    parts = ["links.service:LinkService", "discovery.service:DullDiscovery"]
    if config.join_proxy:
        parts.append("brski.proxy_launcher:JoinProxyService")  # switches on with an LDevID
    if identity is not None:
        # RPL before channels: it must hear every ChannelUp
        parts += ["rpl.service:RplService"]
    return parts


class Node:
    def __init__(self, config: AcpConfig, identity: dict[str, Any] | None,
                 keep: bool = False) -> None:
        self.config = config
        self.keep = keep
        self.ctx = NodeContext(config=config, bus=EventBus(),
                               control=ControlServer(config.control_socket), identity=identity)
        self.services: list[Service] = []
        self.created_namespaces: list[str] = []
        self.started = time.monotonic()
        self.ctx.control.register("status", self._status)

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
        # Build every part before starting any, so that each hears the events the ones
        # before it publish while starting (e.g. discovery hears links adopted at start).
        built: list[Service] = []
        for spec in part_names(self.config, self.ctx.identity):
            module_name, _, class_name = spec.partition(":")
            try:
                module = importlib.import_module(f"{__package__}.{module_name}")
            except ImportError as exc:
                LOG.warning("part %s not available: %s", module_name, exc)
                continue
            built.append(getattr(module, class_name)(self.ctx))
        for service in built:
            await service.start()
            self.services.append(service)
            LOG.debug("started %s", service.name)
        LOG.info("node up: %s", ", ".join(s.name for s in self.services))

    async def stop(self) -> None:
        for service in reversed(self.services):
            try:
                if self.keep and hasattr(service, "keep_on_stop"):
                    service.keep_on_stop = True  # type: ignore[attr-defined]
                await service.stop()
            except Exception:
                LOG.exception("stopping %s failed", service.name)
        self.services.clear()
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
        }
        for service in self.services:
            out[service.name] = service.status()
        return out


def _write_sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)

"""What every part of acpd is given: configuration, identity, the event bus, the control server.

A part ("service") is a class built as `Service(ctx)` with `async start()`, `async stop()` and
`status() -> dict` (JSON-ready). In `__init__` or `start()` it subscribes to the events it acts
on (`ctx.bus`) and registers its control commands (`ctx.control.register("rpl", handler)`).
`stop()` removes everything the part created. The coordinator starts parts in order and stops
them in reverse order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .config import AcpConfig
from .control.server import ControlServer
from .events import EventBus


@dataclass
class NodeContext:
    config: AcpConfig
    bus: EventBus
    control: ControlServer
    # identity_summary() of the LDevID's acp-node-name (acp_address, prefix_length, scheme,
    # routing_subdomain, acp_domain, ula_prefix, acp_node_name); None while the node has no LDevID.
    identity: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def dull_ns(self) -> str:
        return self.config.namespace_dull

    @property
    def acp_ns(self) -> str:
        return self.config.namespace_acp

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def log_dir(self) -> Path:
        return self.config.log_dir


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

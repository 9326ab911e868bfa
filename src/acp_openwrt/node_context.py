"""What every part of acpd is given, and what a part is.

A part is a class built as `Part(ctx)` with `async start()`, `async stop()` and
`status() -> dict` (JSON-ready); `Service` lists every hook the coordinator calls and `Part`
gives the defaults, so the coordinator calls them all without probing. In `__init__` or
`start()` a part subscribes to the events it acts on (`ctx.bus`) and registers its control
commands (`ctx.control.register("rpl", handler)`). `stop()` removes everything the part
created. The coordinator starts parts in order and stops them in reverse order.

Parts talk in two ways only (docs/parts.md):

- **events** on `ctx.bus` for what happened (every type in `acp_openwrt.events`);
- **ports** for the few queries and commands that need an answer from one particular part:
  typed Protocols (`AcpGraspPort`), reached as `ctx.acp_grasp`, `None` while no part provides
  them. A part declares what it provides in `ports()` (e.g. `Ports(acp_grasp=self)`, checked by
  mypy against the Protocol, so renaming a method is a type error, not a silent feature loss);
  the coordinator fills `ctx.ports` when it builds the parts and clears a part's ports before
  stopping it. A part that uses a port handles `None`: the providing part is not installed,
  failed to start, or is stopping.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import AcpConfig
from .control.server import ControlServer
from .events import EventBus

if TYPE_CHECKING:
    from .grasp.asa_api import AsaApi


class AcpGraspPort(Protocol):
    """The ACP GRASP instance, for acpd's own ASAs (provided by `grasp.part.AcpGraspPart`)."""

    def asa_api(self) -> AsaApi | None:
        """The RFC 8991-style ASA API of the running ACP GRASP (None before it started):
        the registrar registers its AN_join_registrar objective and floods through it."""
        ...

    async def find_est_server(self) -> tuple[str, int] | None:
        """The EST server (address, port) last heard of in the ACP, else one discovered now
        (None: none known). The pledge part asks when a renewal is due, since it may start (or
        be rebuilt) after the EstServerHeard event went by."""
        ...


class RplPort(Protocol):
    """The node's RPL state (provided by `rpl.part.RplPart`), for the ACP map's node report."""

    def status(self) -> Mapping[str, Any]:
        """The `rpl` control answer (control.api.RplStatus): role, rank, parents, routes."""
        ...


@dataclass(frozen=True)
class Ports:
    """The typed ports a part provides, or (in `ctx.ports`) those that are available now."""
    acp_grasp: AcpGraspPort | None = None
    rpl: RplPort | None = None

    def merged(self, other: Ports) -> Ports:
        """These ports with those `other` provides added; a port provided twice is an error."""
        taken = {f.name: getattr(other, f.name) for f in fields(other)
                 if getattr(other, f.name) is not None}
        clash = [name for name in taken if getattr(self, name) is not None]
        if clash:
            raise ValueError(f"port {', '.join(clash)} provided twice")
        return replace(self, **taken)

    def without(self, provider: object) -> Ports:
        """These ports minus those `provider` provides."""
        gone = {f.name: None for f in fields(self) if getattr(self, f.name) is provider}
        return replace(self, **gone) if gone else self

    def names(self) -> list[str]:
        """The names of the ports present."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class NodeContext:
    config: AcpConfig
    bus: EventBus
    control: ControlServer
    # identity_summary() of the LDevID's acp-node-name (acp_address, prefix_length, scheme,
    # routing_subdomain, acp_domain, ula_prefix, acp_node_name); None while the node has no LDevID.
    identity: dict[str, Any] | None = None
    # filled and cleared by the coordinator only (parts declare theirs in `Part.ports()`)
    ports: Ports = field(default_factory=Ports)

    @property
    def acp_grasp(self) -> AcpGraspPort | None:
        return self.ports.acp_grasp

    @property
    def rpl(self) -> RplPort | None:
        return self.ports.rpl

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
    """Every hook the coordinator calls on a part (`Part` gives the defaults)."""
    name: str
    # set by the coordinator before stop() in a restart (`acpd --keep`, reload, new identity):
    # leave what the next acpd or build of the parts adopts (links, connect interfaces)
    keep_on_stop: bool

    def ports(self) -> Ports:
        """The ports this part provides (filled when the parts are built)."""
        ...

    def prepare(self) -> None:
        """Called on every built part before any starts: begin slow work that needs no other
        part (spawning a daemon) as a task, so that it overlaps the earlier parts' starts;
        start() then waits for it, stop() cancels it."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> Mapping[str, Any]:
        """JSON-ready; the part's TypedDict in control.api (docs/control-api.md)."""
        ...

    async def reload_identity(self) -> None:
        """The LDevID was renewed with the same acp-node-name: use the new files."""
        ...


class Part:
    """Base class of acpd's parts: the defaults of every `Service` hook but start/stop/status."""
    name: str
    keep_on_stop: bool = False

    def ports(self) -> Ports:
        return Ports()

    def prepare(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> Mapping[str, Any]:
        return {}

    async def reload_identity(self) -> None:
        return None

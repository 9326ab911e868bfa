"""RPL as an acpd part: the sans-I/O engine (dodag.RplNode) wired to its socket, routes and events.

Interfaces: each ChannelUp's `acp_ifname` becomes an RPL interface, each ChannelDown removes it;
rtnetlink link state takes a link out of RPL while it is down or without carrier and back when
it returns. Time is the event loop's monotonic clock; the engine's own timers run on one loop
timer at its next_timer() (core.CoreTimer, docs/core-contract.md). Route changes are coalesced:
whenever the engine's route plan changes, one reconcile runs (and one more if it changed
meanwhile).

With `external=True` (UCI `rpl_external`) the engine stays off and unstrung's sunshine runs in
the ACP namespace instead, with the same role and prefix, restarted when the interfaces change.
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import events
from ..core import CoreTimer
from ..events import ConnectSubnetDown, ConnectSubnetUp
from ..node_context import NodeContext, Part, Ports
from .actions import Send
from .dodag import RplNode
from .installer import RTPROT_ACP_RPL, RouteInstaller
from .linkstate import LinkWatcher
from .options import DodagConfiguration
from .profile import RplConfig
from .routes import Route, RouteKind
from .transport import RplTransport
from .unstrung import SunshineLauncher

LOG = logging.getLogger("acpd.rpl")
RESTART_DELAY = 0.5  # let a burst of channel events settle before restarting sunshine


class RplPart(Part):
    name = "rpl"

    def __init__(self, ctx: NodeContext, *, namespace: str | None = None,
                 address: ipaddress.IPv6Address | str | None = None,
                 prefix_length: int | None = None, root: bool | None = None,
                 dodag: DodagConfiguration | None = None, protocol: int = RTPROT_ACP_RPL,
                 external: bool | None = None, sunshine: str | None = None,
                 forwarding: bool = True, rng: random.Random | None = None,
                 acp_connect: bool | None = None, **engine: Any) -> None:
        """`dodag` and `engine` (RplConfig fields: dao_delay, hold_down, neighbor_timeout...)
        override the RFC 8994 profile defaults, for tests and benchmarks. `acp_connect` (default:
        the config has an enabled connect section) gives DODAGPreference 0b010 (§6.12.1.12)."""
        self.ctx = ctx
        self.namespace = namespace or ctx.acp_ns
        ident = ctx.identity or {}
        raw = address if address is not None else ident.get("acp_address")
        self.address = ipaddress.IPv6Address(raw) if raw is not None else None
        self.prefix_length = prefix_length if prefix_length is not None \
            else ident.get("prefix_length")
        self.root = ctx.config.dodag_root if root is None else root
        # UCI rpl_external / rpl_sunshine unless the caller says otherwise
        self.external = ctx.config.rpl_external if external is None else external
        if sunshine is None and ctx.config.rpl_sunshine is not None:
            sunshine = str(ctx.config.rpl_sunshine)
        self.forwarding = forwarding
        if acp_connect is None:
            acp_connect = any(getattr(c, "enabled", True)
                              for c in getattr(ctx.config, "connect", ()))
        self.acp_connect = acp_connect
        # Extra DAO targets (ACP connect subnets, §8.1.1), kept across start/stop.
        self.targets: set[ipaddress.IPv6Network] = set()
        self._target_unsubscribe = [
            ctx.bus.subscribe(ConnectSubnetUp, self._on_subnet_up),
            ctx.bus.subscribe(ConnectSubnetDown,
                              lambda ev: self.remove_target(ipaddress.IPv6Network(ev.prefix))),
        ]
        self._dodag = dodag
        self._engine_options = engine
        self._rng = rng
        self.node: RplNode | None = None
        self.installer = RouteInstaller(self.namespace, protocol)
        self.transport = RplTransport(self.namespace, self._on_receive)
        self.links = LinkWatcher(self.namespace, self._on_link)
        self.launcher = SunshineLauncher(self.namespace, Path(ctx.log_dir), sunshine)
        self.extra_routes: frozenset[Route] = frozenset()
        self._wanted: dict[str, int] = {}       # interfaces from ChannelUp, by index
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._timer: CoreTimer[Send] | None = None
        self._routes_dirty = asyncio.Event()
        self._desired: frozenset[Route] = frozenset()
        self._plan_from: tuple[frozenset[Route], frozenset[Route]] | None = None
        self._logged_parent: tuple[str, ipaddress.IPv6Address] | None = None
        self._running = False
        self._restart: asyncio.TimerHandle | None = None
        ctx.control.register("rpl", self._control)

    def ports(self) -> Ports:
        return Ports(rpl=self)  # RplPort: status() for the ACP map's node report

    # ------------------------------------------------------------ lifecycle
    def rpl_config(self) -> RplConfig | None:
        """The engine's settings from identity and config; None without an ACP address."""
        if self.address is None:
            return None
        options = dict(self._engine_options)
        if self._dodag is not None:
            options["dodag"] = self._dodag
        config = RplConfig.for_address(self.address, root=self.root,
                                       registrar=self.ctx.config.registrar,
                                       acp_connect=self.acp_connect, **options)
        if self.prefix_length is not None and self.prefix_length != config.prefix.prefixlen:
            prefix = ipaddress.IPv6Network(f"{self.address}/{self.prefix_length}", strict=False)
            config = dataclasses.replace(config, prefix=prefix)
        return config

    def root_range(self) -> ipaddress.IPv6Network | None:
        """What a root is root for: config `prefix`, else the /48 ULA of its address."""
        if not self.root or self.address is None:
            return None
        if self.ctx.config.prefix is not None:
            return self.ctx.config.prefix
        return ipaddress.IPv6Network(f"{self.address}/48", strict=False)

    async def start(self) -> None:
        config = self.rpl_config()
        if config is None:
            LOG.warning("RPL not started: the node has no ACP address (no LDevID yet)")
            return
        if self.external:
            self.launcher.find()  # a clear error now rather than at the first channel
            self._subscribe()
            self._running = True
            return
        self.node = RplNode(config, rng=self._rng)
        self.node.set_targets(frozenset(self.targets), self._now())
        outer = self.root_range()
        if outer is not None and outer != config.prefix:
            # Unknown ACP destinations end at the root (RFC 8994 §6.12.1.14), countable there.
            self.extra_routes = frozenset({Route(outer, RouteKind.BLACKHOLE)})
        self.installer.open()
        if self.forwarding and await self.installer.enable_forwarding():
            LOG.info("enabled IPv6 forwarding in namespace %s", self.namespace)
        self.transport.open()
        self.links.open()
        self._update_routes()
        self._subscribe()
        self._running = True
        self._timer = CoreTimer(_TimedNode(self.node, self._update_routes), self._execute,
                                name="rpl")
        self._timer.rearm()
        self._spawn(self._routes())
        LOG.info("RPL started: %s %s prefix %s", self.node.role, config.address, config.prefix)

    async def stop(self) -> None:
        """Close the socket and remove every route this node's RPL installed."""
        for unsubscribe in self._target_unsubscribe:
            unsubscribe()
        self._target_unsubscribe.clear()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._running = False
        if self._restart is not None:
            self._restart.cancel()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.links.close()
        self.transport.close()
        await self.installer.close(remove=True)
        await self.launcher.stop()
        self._wanted.clear()

    def _subscribe(self) -> None:
        bus = self.ctx.bus
        self._unsubscribe = [
            bus.subscribe(events.ChannelUp, lambda ev: self.add_interface(ev.acp_ifname)),
            bus.subscribe(events.ChannelDown, lambda ev: self.remove_interface(ev.acp_ifname)),
        ]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("RPL task failed: %r", task.exception(), exc_info=task.exception())

    # ----------------------------------------------------------- interfaces
    def add_interface(self, ifname: str) -> None:
        """An ACP interface to run RPL on (ChannelUp); the work happens on the event loop."""
        if self._running:
            self._spawn(self._add(ifname))

    def remove_interface(self, ifname: str) -> None:
        if not self._running:
            return
        self._wanted.pop(ifname, None)
        if self.external:
            self._schedule_restart()
            return
        self.transport.remove_interface(ifname)
        if self.node is not None:
            self._dispatch(self.node.interface_down(ifname, self._now()))

    async def _add(self, ifname: str) -> None:
        if self.external:
            self._wanted[ifname] = 0
            self._schedule_restart()
            return
        link = await self.installer.link(ifname)
        if link is None:
            LOG.warning("ACP interface %s does not exist in namespace %s", ifname, self.namespace)
            return
        index, usable = link
        self._wanted[ifname] = index
        self.transport.add_interface(ifname, index)
        if usable and self.node is not None:
            self._dispatch(self.node.interface_up(ifname, self._now()))

    def _on_link(self, index: int, usable: bool | None) -> None:
        """rtnetlink: a link changed. Only our interfaces matter."""
        ifname = next((n for n, i in self._wanted.items() if i == index), None)
        if ifname is None or self.node is None:
            return
        now = self._now()
        if usable is None:
            self.remove_interface(ifname)
        elif not usable and ifname in self.node.interfaces:
            LOG.info("ACP interface %s lost its link", ifname)
            self._dispatch(self.node.interface_down(ifname, now))
        elif usable and ifname not in self.node.interfaces:
            LOG.info("ACP interface %s has its link back", ifname)
            self.transport.remove_interface(ifname)  # join ff02::1a afresh
            self.transport.add_interface(ifname, index)
            self._dispatch(self.node.interface_up(ifname, now))

    # ------------------------------------------------------------ targets
    def _on_subnet_up(self, event: ConnectSubnetUp) -> None:
        if event.dao_target:
            self.add_target(ipaddress.IPv6Network(event.prefix))

    def add_target(self, prefix: ipaddress.IPv6Network) -> None:
        """Announce `prefix` as an extra DAO target (an ACP connect subnet)."""
        self.targets.add(prefix)
        self._push_targets()

    def remove_target(self, prefix: ipaddress.IPv6Network) -> None:
        self.targets.discard(prefix)
        self._push_targets()

    def _push_targets(self) -> None:
        if self.external and self.targets:
            LOG.warning("unstrung announces only the node prefix; connect subnets are not "
                        "in RPL")
        if self.node is not None and self._running:
            self._dispatch(self.node.set_targets(frozenset(self.targets), self._now()))

    # -------------------------------------------------------------- engine
    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _on_receive(self, ifname: str, src: ipaddress.IPv6Address, code: int, body: bytes,
                    dst: ipaddress.IPv6Address) -> None:
        node = self.node
        if node is not None:
            acked = node.daos_acknowledged
            self._dispatch(node.receive(ifname, src, code, body, self._now(), dst))
            if node.daos_acknowledged != acked:   # a parent routes to us now
                self.ctx.bus.publish(events.AcpRoutesChanged(installed=False))

    def _dispatch(self, actions: list[Send]) -> None:
        """What an input to the engine returned: sent, the route plan looked at, the timer
        re-armed at the engine's next_timer()."""
        if self._timer is not None:
            self._timer.feed(actions)
        else:
            self._execute(actions)
        self._update_routes()

    def _note_parent(self) -> None:
        """Log a change of preferred parent: when this node joined the DODAG, and when it
        moved (the formation bench reads these lines too)."""
        parent = self.node.parents[0] if self.node is not None and self.node.parents else None
        if parent == self._logged_parent:
            return
        self._logged_parent = parent
        if parent is None:
            LOG.info("RPL: no parent (detached)")
        else:
            LOG.info("RPL: preferred parent %s on %s", parent[1], parent[0])

    def _execute(self, actions: Sequence[Send]) -> None:
        for action in actions:
            self.transport.send(action)

    def _update_routes(self) -> None:
        if self.node is None:
            return
        self._note_parent()
        plan = self.node.routes()
        if self._plan_from is not None and self._plan_from[0] is plan \
                and self._plan_from[1] is self.extra_routes:
            return  # the engine's cached plan: nothing changed (no O(routes) union, compare)
        self._plan_from = (plan, self.extra_routes)
        desired = plan | self.extra_routes
        if desired != self._desired:
            self._desired = desired
            self._routes_dirty.set()

    async def _routes(self) -> None:
        while True:
            await self._routes_dirty.wait()
            self._routes_dirty.clear()
            try:
                change = await self.installer.apply(self._desired)
            except Exception as exc:  # netlink trouble: log, and retry at the next change
                LOG.error("installing RPL routes failed: %s", exc)
                continue
            if change:
                LOG.debug("routes: +%d -%d", len(change.add), len(change.remove))
                if change.add:
                    self.ctx.bus.publish(events.AcpRoutesChanged(installed=True))

    # ------------------------------------------------------------- external
    def _schedule_restart(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
        loop = asyncio.get_running_loop()
        self._restart = loop.call_later(RESTART_DELAY, lambda: self._spawn(self._relaunch()))

    async def _relaunch(self) -> None:
        config = self.rpl_config()
        assert config is not None
        prefix = self.root_range() if self.root else config.prefix
        assert prefix is not None
        await self.launcher.start(sorted(self._wanted), root=self.root,
                                  dodag_id=self.address if self.root else None, prefix=prefix)

    # --------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """role, rank, dodag_id, parents, children, routes (the plan), installed, counters."""
        if self.external:
            return {"implementation": "unstrung", "role": "root" if self.root else "member",
                    "running": self._running, "pid": self.launcher.pid,
                    "argv": self.launcher.argv, "interfaces": sorted(self._wanted),
                    "rank": None, "dodag_id": None, "parents": [], "children": [],
                    "routes": []}
        if self.node is None:
            return {"implementation": "acpd", "role": "inactive", "running": False,
                    "reason": "no ACP address" if self.address is None else "not started",
                    "rank": None, "dodag_id": None, "parents": [], "children": [],
                    "routes": []}
        status = self.node.status()
        status["routes"] = [r.to_json() for r in sorted(self._desired, key=_route_order)]
        status["installed"] = [r.to_json() for r in sorted(self.installer.last,
                                                           key=_route_order)]
        status["counters"].update({f"transport_{k}": v for k, v in self.transport.counters.items()})
        status["counters"].update({f"routes_{k}": v for k, v in self.installer.counters.items()})
        status.update(implementation="acpd", running=self._running, namespace=self.namespace,
                      protocol=self.installer.protocol,
                      targets=sorted(str(t) for t in self.targets),
                      own_preference=self.node.config.preference)
        return status

    def _control(self, _request: dict[str, Any]) -> dict[str, Any]:
        return self.status()


class _TimedNode:
    """The engine as CoreTimer runs it: after its timer work the route plan is looked at
    too, as after every input (an expired route or neighbour may send nothing)."""

    def __init__(self, node: RplNode, routes_changed: Callable[[], None]) -> None:
        self.node = node
        self.routes_changed = routes_changed

    def next_timer(self) -> float | None:
        return self.node.next_timer()

    def handle_timer(self, now: float) -> list[Send]:
        sends = self.node.handle_timer(now)
        self.routes_changed()
        return sends


def _route_order(route: Route) -> tuple[int, int]:
    return (route.prefix.prefixlen, int(route.prefix.network_address))

"""ChannelPart: adjacencies in, secure channels and ChannelUp/ChannelDown out.

The asyncio edge around the sans-I/O PeerChannel: it carries out its actions through the IKE
driver (VICI, on a one-thread executor; initiations each on a pool thread since they block until
the outcome) and through netlink on threads living in the DULL and ACP namespaces. Events from
charon arrive on the driver's thread and are handed to the loop. Per channel, actions run in
order under a lock. Which candidates are kept and when their initiations may start is bounded
(attempts.py, carried out by initiation.py). On start it adopts what a previous acpd left
(charon, its established connections and SAs, the xfrm interfaces: reconcile.py plans, this part
carries the plan out); stop() removes everything.

Time is the loop's monotonic clock, given to the channels with every input. Their own timers
(the next attempt after a back-off, the end of an adopted channel's grace) are asked for, never
polled: the channel table is the core that one CoreTimer (docs/core-contract.md) keeps a single
loop timer armed for, at the soonest of its channels' next_timer(), re-armed after every input.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from .. import events
from ..core import CoreTimer
from ..identity.cert_reader import load_certificates
from ..netns import namespace_executor
from ..node_context import Part
from . import initiation, reconcile
from . import xfrm_interface as xi
from .attempts import InitiationSlots, Limits, Parking
from .channel_table import Channel, ChannelTable, Due
from .charon import CharonSupervisor
from .connection import ChannelTimers, acp_ifname, connection, dull_ifname
from .driver import Credentials, DriverError, IkeDriver, LogLine, SaEvent
from .ike_identity import local_identity
from .peer_channel import (
    ADJACENCY_GONE,
    INITIAL_RETRY,
    MAX_RETRY,
    Action,
    Activate,
    Deactivate,
    Initiate,
    PeerChannel,
    Prepare,
    Release,
    Remove,
    State,
    Terminate,
    Verify,
)
from .peer_check import check_peer
from .revocation import RevocationView, recheck
from .strongswan_conf import CharonSettings
from .vici_driver import ViciDriver, pem_blocks

LOG = logging.getLogger("acpd.channels")
T = TypeVar("T")
DEFAULT_TIMERS = ChannelTimers()
DEFAULT_LIMITS = Limits()


class ChannelPart(Part):
    name = "channels"

    def __init__(self, ctx: Any, *, timers: ChannelTimers = DEFAULT_TIMERS,
                 charon_settings: CharonSettings | None = None,
                 driver_factory: Callable[[Any], IkeDriver] | None = None,
                 initial_retry: float = INITIAL_RETRY, max_retry: float = MAX_RETRY,
                 adoption_grace: float = 150.0, if_id_base: int = 0x100,
                 initiate_timeout: float = 30.0, answer_timeout: float = 5.0,
                 limits: Limits = DEFAULT_LIMITS, rng: random.Random | None = None) -> None:
        """`answer_timeout`: an attempt whose IKE_SA_INIT got no answer by then is given up
        (two sends with the default retransmission); `initiate_timeout` bounds an answered
        one. `adoption_grace`: how long an adopted channel waits for its adjacency, longer
        than two AN_ACP flood periods (60 s, +10 % jitter) so one lost flood costs nothing."""
        self.ctx = ctx
        self.timers = timers
        self.initial_retry, self.max_retry = initial_retry, max_retry
        self.adoption_grace = adoption_grace
        self.initiate_timeout, self.answer_timeout = initiate_timeout, answer_timeout
        self.limits = limits
        self.rng = rng or random.Random()
        self.slots = InitiationSlots(limits.per_interface, limits.per_node)
        self.parking = Parking(limits.parked)
        self.link_of: dict[str, str] = {}   # our link-local -> its DULL link (for knocks)
        # DULL link -> our link-local on it: from LinkAdopted, or looked up once; a flood of
        # forged neighbours would otherwise cost one netlink lookup per attempt
        self.local_ll_of: dict[str, str] = {}
        self.table = ChannelTable(if_id_base)
        settings = charon_settings or CharonSettings(vici_socket="/run/charon.vici")
        self.charon = CharonSupervisor(ctx.dull_ns, ctx.run_dir, ctx.log_dir, settings=settings,
                                       on_restart=self._charon_restarted)
        self._driver_factory = driver_factory or (lambda sup: ViciDriver(sup.vici_socket))
        self.driver: IkeDriver | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: CoreTimer[Due] | None = None   # the channels' timers, on the loop
        self._registered = False
        self._acp_address: ipaddress.IPv6Address | None = None
        self._creds: Credentials | None = None
        self._local_id: str | None = None
        self._anchors: list[Any] = []
        self._domain = ""
        self.revocation = RevocationView()   # RevocationUpdated: revoked peers get no channel
        self.running = False
        self._charon_start: asyncio.Task[None] | None = None  # prepare() began charon's start

    # --- time ---
    def now(self) -> float:
        """The channels' clock: the loop's monotonic time (CoreTimer's)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:   # no loop (a status read outside acpd): the same clock
            return time.monotonic()

    def rearm(self) -> None:
        """After any input to a channel: the loop timer at the soonest channel timer."""
        if self._timer is not None:
            self._timer.rearm()

    def _timers_due(self, due: Sequence[Due]) -> None:
        for ch, actions in due:
            for action in actions:
                if isinstance(action, Remove) and action.reason != ADJACENCY_GONE:
                    LOG.info("channel %s: %s, removing", ch.conn, action.reason)
            self._dispatch(ch, actions)
        initiation.unpark(self)
        initiation.pump(self)

    # --- thread hops ---
    async def _in(self, executor: concurrent.futures.Executor, fn: Callable[..., T],
                  *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def _vici(self, fn_name: str, *args: Any) -> Any:
        if self.driver is None:
            raise DriverError("charon is not connected")
        return await self._in(self._vici_ex, getattr(self.driver, fn_name), *args)

    # --- life cycle ---
    def prepare(self) -> None:
        """charon's start (a second or more on a small box or the lab guest) overlaps the starts
        of the parts before this one; start() waits for it."""
        if self.ctx.identity is None or self.ctx.config.ldevid_cert is None \
                or self._charon_start is not None:
            return
        self._charon_start = asyncio.get_running_loop().create_task(self.charon.start(),
                                                                    name="charon-start")

    async def start(self) -> None:
        if not self._registered:
            self.ctx.control.register("channels", self._cmd_channels)
            self._registered = True
        if self.ctx.identity is None or self.ctx.config.ldevid_cert is None:
            LOG.info("no LDevID: secure channels stay off")
            return
        self._load_identity()
        self._dull_ex = namespace_executor(self.ctx.dull_ns)
        self._acp_ex = namespace_executor(self.ctx.acp_ns)
        self._vici_ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vici")
        self._init_ex = concurrent.futures.ThreadPoolExecutor(self.limits.per_node + 1,
                                                              thread_name_prefix="ike-init")
        if self._acp_address is not None:
            await self._in(self._acp_ex, xi.set_loopback, str(self._acp_address), True)
        starting, self._charon_start = self._charon_start, None
        try:
            await (starting if starting is not None else self.charon.start())
            await self._connect_driver()
        except BaseException:  # no half-started part: stop() returns early when not running
            await self.charon.stop()
            raise
        self.running = True
        self._timer = CoreTimer(self.table, self._timers_due, name="channels")
        await self._reconcile()
        bus = self.ctx.bus
        self._unsubscribe = [bus.subscribe(events.AdjacencyUp, self._on_adjacency_up),
                             bus.subscribe(events.AdjacencyAlive, self._on_adjacency_alive),
                             bus.subscribe(events.AdjacencyDown, self._on_adjacency_down),
                             bus.subscribe(events.RevocationUpdated, self._on_revocation),
                             bus.subscribe(events.LinkAdopted, self._on_link_adopted),
                             bus.subscribe(events.LinkReleased, self._on_link_released)]
        self.rearm()

    def _load_identity(self) -> None:
        config = self.ctx.config
        certs = load_certificates(config.ldevid_cert)
        cert_pem = pem_blocks(config.ldevid_cert.read_bytes())
        blocks = list(cert_pem)
        anchors_pem = tuple(pem_blocks(config.trust_anchors.read_bytes())) \
            if config.trust_anchors else ()
        self._creds = Credentials(blocks[0], config.ldevid_key.read_bytes(),
                                  tuple(blocks[1:]), anchors_pem)
        self._anchors = load_certificates(config.trust_anchors) if config.trust_anchors else []
        self._local_id = local_identity(certs[0]).value
        address = self.ctx.identity.get("acp_address")
        self._acp_address = ipaddress.IPv6Address(address) if address else None
        self._domain = self.ctx.identity["acp_domain"]

    async def _connect_driver(self) -> None:
        self.driver = self._driver_factory(self.charon)
        loop = asyncio.get_running_loop()
        await self._vici("connect")
        assert self._creds is not None
        await self._vici("load_credentials", self._creds)

        def on_event(ev: SaEvent | LogLine) -> None:   # on the driver's thread
            loop.call_soon_threadsafe(self._on_sa_event, ev)

        def on_lost(why: str) -> None:
            loop.call_soon_threadsafe(LOG.warning, "charon: %s", why)
        self.driver.listen(on_event, on_lost)

    async def stop(self) -> None:
        """Terminate every SA, unload every connection, delete interfaces, routes, lo address."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._charon_start is not None:  # prepared, never started (an earlier part failed)
            starting, self._charon_start = self._charon_start, None
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            await self.charon.stop()
        if not self.running:
            return
        self.running = False
        await self._cancel_tasks()
        for ch in list(self.table):
            async with ch.lock:
                await self._remove(ch, tuple(ch.fsm.sas))
        with contextlib.suppress(OSError):
            if self._acp_address is not None:
                await self._in(self._acp_ex, xi.set_loopback, str(self._acp_address), False)
        if self.driver is not None:
            await self._in(self._vici_ex, self.driver.close)
        await self.charon.stop()
        self._shutdown_executors()

    async def abandon(self) -> None:
        """Stop without cleaning up, as a crashed acpd would (charon, SAs, interfaces stay)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self.running = False
        await self._cancel_tasks()
        self.charon.abandon()
        if self.driver is not None:
            await self._in(self._vici_ex, self.driver.close)
        self._shutdown_executors()

    async def _cancel_tasks(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _shutdown_executors(self) -> None:
        for ex in (self._dull_ex, self._acp_ex, self._vici_ex, self._init_ex):
            ex.shutdown(wait=False, cancel_futures=True)

    # --- inputs ---
    def _on_adjacency_up(self, ev: events.AdjacencyUp) -> None:
        if ev.methods and "IKEv2" not in ev.methods:
            return
        ch = self.table.get(ev.dull_ifname, ev.peer)
        if ch is None:
            ch = initiation.admit(self, (ev.dull_ifname, ev.peer))
            if ch is None:
                return  # parked: its turn comes when room frees
        ch.heard = True
        self._dispatch(ch, ch.fsm.adjacency_up(self.now()))

    def _on_link_adopted(self, ev: events.LinkAdopted) -> None:
        self.local_ll_of[ev.dull_ifname] = ev.link_local

    def _on_link_released(self, ev: events.LinkReleased) -> None:
        self.local_ll_of.pop(ev.dull_ifname, None)

    def _on_adjacency_alive(self, ev: events.AdjacencyAlive) -> None:
        initiation.alive(self, ev.dull_ifname, ev.peer)

    def _on_revocation(self, ev: events.RevocationUpdated) -> None:
        self.revocation.update(ev.revoked)
        self.spawn(recheck(self))

    def _on_adjacency_down(self, ev: events.AdjacencyDown) -> None:
        key = (ev.dull_ifname, ev.peer)
        if self.parking.remove(key):
            return
        ch = self.table.get(*key)
        if ch is None:
            return
        self.slots.cancel(key)
        if (not ch.prepared and not ch.fsm.sas and ch.acp_ifname is None
                and not self.slots.in_flight(key) and not ch.lock.locked()):
            # nothing of it in charon or the kernel (a flood evicts these by the thousand)
            self.table.remove(ch)
            initiation.unpark(self)
            return
        self._dispatch(ch, ch.fsm.adjacency_down(self.now()))

    def new_channel(self, key: tuple[str, str]) -> Channel:
        ch = Channel(key[1], key[0], self.table.allocate_if_id(), self._new_fsm())
        self.table.add(ch)
        return ch

    def _new_fsm(self) -> PeerChannel:
        mine = int(self._acp_address) if self._acp_address is not None else None
        return PeerChannel(mine, initial_retry=self.initial_retry, max_retry=self.max_retry,
                           rng=self.rng)

    def _on_sa_event(self, ev: SaEvent | LogLine) -> None:
        if isinstance(ev, LogLine):
            initiation.heard_log(self, ev)
            return
        ch = self.table.by_conn(ev.sa.conn)
        if ch is None:
            return
        fsm, sa, now = ch.fsm, ev.sa, self.now()
        LOG.debug("channel %s %s: charon: %s SA %s %s", ch.dull_ifname, ch.peer, ev.kind,
                  sa.unique_id, "up" if ev.up else "down")
        if ev.kind == "ike":
            actions = fsm.sa_seen(sa.unique_id, sa.initiator, sa.remote_id) if ev.up \
                else fsm.sa_down(sa.unique_id, now)
        elif ev.kind == "child" and ev.child is not None:
            actions = fsm.child_up(sa.unique_id, ev.child.unique_id, sa.initiator, sa.remote_id) \
                if ev.up else fsm.child_down(sa.unique_id, ev.child.unique_id, now)
        elif ev.kind == "ike-rekey" and ev.old_id:
            fsm.ike_rekeyed(ev.old_id, sa.unique_id)
            actions = []
        elif ev.kind == "child-rekey" and ev.old_id and ev.child is not None:
            fsm.child_rekeyed(sa.unique_id, ev.old_id, ev.child.unique_id)
            actions = []
        else:
            actions = []
        self._dispatch(ch, actions)

    # --- actions ---
    def _dispatch(self, ch: Channel, actions: Sequence[Action]) -> None:
        """Carry out what an input to the channel returned; its timer may have moved."""
        if not self.running:
            return  # stopping: stop() itself removes what is left
        if not actions:
            pass
        elif all(isinstance(a, Initiate) for a in actions):  # no I/O: no task for it
            for action in actions:
                assert isinstance(action, Initiate)
                self.slots.request(ch.key, urgent=action.urgent)
            initiation.pump(self)
        else:
            task = asyncio.get_running_loop().create_task(self._apply(ch, actions))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.rearm()

    async def _apply(self, ch: Channel, actions: Sequence[Action]) -> None:
        async with ch.lock:
            for action in actions:
                try:
                    await self._do(ch, action)
                except (OSError, NetlinkError, DriverError) as exc:
                    LOG.warning("channel %s %s: %s failed: %s", ch.dull_ifname, ch.peer,
                                type(action).__name__, exc)
                    ch.fsm.last_error = f"{type(action).__name__}: {exc}"
                    if isinstance(action, Prepare):
                        ch.prepared = False
                        self._dispatch(ch, ch.fsm.initiate_failed(self.now(), str(exc)))
        self.rearm()   # a verdict (Verify) may have set the next attempt

    async def _do(self, ch: Channel, action: Action) -> None:
        began = self.now()
        await self._do_one(ch, action)
        LOG.debug("channel %s %s: %s took %.0f ms", ch.dull_ifname, ch.peer,
                  type(action).__name__, (self.now() - began) * 1000)

    async def _do_one(self, ch: Channel, action: Action) -> None:
        if isinstance(action, Prepare):
            await self._prepare(ch)
        elif isinstance(action, Initiate):
            self.slots.request(ch.key, urgent=action.urgent)
            initiation.pump(self)
        elif isinstance(action, Verify):
            await self._verify(ch, action)
        elif isinstance(action, Terminate):
            LOG.info("channel %s %s: terminating IKE SA %s: %s", ch.dull_ifname, ch.peer,
                     action.sa_id, action.reason)
            await self._vici("terminate_ike", action.sa_id)
        elif isinstance(action, Activate):
            await self._activate(ch, action)
        elif isinstance(action, Deactivate):
            await self._deactivate(ch, action.reason)
        elif isinstance(action, Remove):
            await self._remove(ch, action.sa_ids)
        elif isinstance(action, Release):
            await self._release(ch)

    def spawn(self, coro: Any) -> None:
        if not self.running:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare(self, ch: Channel) -> None:
        """The connection in charon: all an attempt (or the peer's) needs. The interface and
        the route wait for a verified CHILD SA (`_activate`): an attempt at a forged
        neighbour then costs the kernel nothing."""
        if ch.prepared:
            return
        local_ll = self.local_ll_of.get(ch.dull_ifname)
        if local_ll is None:
            local_ll = await self._in(self._dull_ex, xi.link_local_of, ch.dull_ifname)
            self.local_ll_of[ch.dull_ifname] = local_ll
        ch.local_ll = local_ll
        self.link_of[local_ll] = ch.dull_ifname
        await self._load_connection(ch)
        ch.prepared = True

    async def _load_connection(self, ch: Channel) -> None:
        assert self._creds is not None and ch.local_ll is not None
        conn = connection(ch.local_ll, ch.peer, ch.if_id, local_id=self._local_id,
                          cert_pem=self._creds.cert_pem, anchor_pems=self._creds.anchor_pems,
                          timers=self.timers,
                          initial_contact=ch.fsm.peer_ike_id if ch.initial_contact else None)
        await self._vici("load_connection", ch.conn, conn)

    async def reload_identity(self) -> None:
        """The LDevID was renewed under the same acp-node-name: give charon the new credentials
        and reload every connection with them. Established SAs keep running and present the
        new certificate from their next reauthentication (RFC 8994 §6.2.5.3)."""
        if not self.running:
            return
        self._load_identity()
        await self._vici("load_credentials", self._creds)
        for ch in self.table:
            if ch.prepared:
                await self._load_connection(ch)
        LOG.info("channels: renewed LDevID loaded into charon")

    async def _verify(self, ch: Channel, action: Verify) -> None:
        leaves, others = await self._vici("peer_certificates", action.remote_id)
        verdict = check_peer(action.remote_id, leaves, others, self._anchors, self._domain,
                             revoked=self.revocation.problem)
        now = self.now()
        if verdict.ok and verdict.address is not None and verdict.node_name is not None:
            urls = self.revocation.learn(leaves)
            if urls:
                self.ctx.bus.publish(events.CrlDistributionPointsSeen(
                    urls, tuple(c.der for c in verdict.cas)))
            actions = ch.fsm.peer_verified(action.sa_id, int(verdict.address),
                                           verdict.node_name, now)
        else:
            LOG.warning("channel %s %s: peer %s refused: %s", ch.dull_ifname, ch.peer,
                        action.remote_id, verdict.reason)
            actions = ch.fsm.peer_rejected(action.sa_id, verdict.reason, now)
        for follow in actions:
            await self._do(ch, follow)

    async def _activate(self, ch: Channel, action: Activate) -> None:
        ch.kernel = True
        in_acp = {x.if_id: x for x in await self._in(self._acp_ex, xi.list_xfrm)}
        if ch.if_id in in_acp:
            name = in_acp[ch.if_id].ifname
        else:
            taken = {x.ifname for x in in_acp.values()}
            name = acp_ifname(ipaddress.IPv6Address(action.peer_address), taken)
            await self._in(self._dull_ex, xi.create_for_acp, ch.dull_ifname,
                           dull_ifname(ch.if_id), ch.if_id, ch.peer, name, self.ctx.acp_ns)
        await self._in(self._acp_ex, xi.bring_up, name, xi.channel_link_local(self._acp_address))
        ch.acp_ifname = name
        LOG.info("channel %s up to %s (%s) on %s", name, action.peer_node_name, ch.peer,
                 ch.dull_ifname)
        if ch.initial_contact:  # said once; back to unique = no for what follows
            ch.initial_contact = False
            with contextlib.suppress(DriverError):
                await self._load_connection(ch)
        self.ctx.bus.publish(events.ChannelUp(ch.peer, ch.dull_ifname, name,
                                              action.peer_node_name))
        initiation.unpark(self)   # one candidate fewer that is not up: room for a parked one

    async def _deactivate(self, ch: Channel, reason: str) -> None:
        await self._in(self._acp_ex, xi.delete_if_id, ch.if_id)
        name, ch.acp_ifname, ch.prepared = ch.acp_ifname, None, False
        LOG.info("channel %s to %s down: %s", name, ch.peer, reason)
        if name:
            self.ctx.bus.publish(events.ChannelDown(ch.peer, name))
        with contextlib.suppress(OSError, DriverError):
            await self._prepare(ch)

    async def _remove(self, ch: Channel, sa_ids: tuple[str, ...]) -> None:
        for sa_id in sa_ids:
            with contextlib.suppress(DriverError):
                await self._vici("terminate_ike", sa_id)
        with contextlib.suppress(DriverError):
            await self._vici("unload_connection", ch.conn)
        if ch.kernel:
            with contextlib.suppress(OSError):
                await self._in(self._acp_ex, xi.delete_if_id, ch.if_id)
            await self._forget_dull_side(ch)
        if ch.acp_ifname:
            self.ctx.bus.publish(events.ChannelDown(ch.peer, ch.acp_ifname))
        self.slots.cancel(ch.key)
        self.table.remove(ch)
        initiation.unpark(self)

    async def _release(self, ch: Channel) -> None:
        """An attempt nobody answered: nothing of it stays in charon or the kernel."""
        for step in (("terminate_conn", ch.conn), ("unload_connection", ch.conn)):
            with contextlib.suppress(DriverError):
                await self._vici(*step)
        if ch.kernel:
            await self._forget_dull_side(ch)
        ch.prepared = False

    async def _forget_dull_side(self, ch: Channel) -> None:
        """The channel's xfrm interface (if still in DULL) and its route to the peer there.
        Only for a channel that had them: under a flood of forged neighbours these netlink
        calls, one per attempt, queued a real neighbour's activation behind them."""
        with contextlib.suppress(OSError):
            await self._in(self._dull_ex, xi.delete_if_id, ch.if_id)
            await self._in(self._dull_ex, xi.delete_route, ch.peer, ch.dull_ifname)

    # --- restart and reconcile ---
    async def _charon_restarted(self) -> None:
        """A new charon knows nothing: reload, and let every channel start over at once."""
        if self.driver is not None:
            with contextlib.suppress(DriverError):
                await self._in(self._vici_ex, self.driver.close)
        await self._connect_driver()
        now = self.now()
        for ch in list(self.table):
            ch.prepared, ch.initial_contact = False, True
            self._dispatch(ch, ch.fsm.charon_restarted(now))

    async def _reconcile(self) -> None:
        """After an acpd restart: adopt what charon and the kernel hold (reconcile.plan)."""
        conns = await self._vici("list_connections")
        sas = await self._vici("list_sas")
        acp_links = await self._in(self._acp_ex, xi.list_xfrm)
        dull_links = await self._in(self._dull_ex, xi.list_xfrm)
        todo = reconcile.plan(conns, sas, acp_links, dull_links, self.table.keys())
        for unload in todo.unload:
            for step in ("terminate_conn", "unload_connection"):
                with contextlib.suppress(DriverError):
                    await self._vici(step, unload.conn)
        adopted = [await self._adopt(adopt) for adopt in todo.adopt]
        # SAs deleted between list-sas and the channels' creation sent events nobody heard.
        by_conn = {ch.conn: ch for ch in adopted}
        gone = reconcile.vanished({conn: tuple(ch.fsm.sas) for conn, ch in by_conn.items()},
                                  await self._vici("list_sas"))
        for conn, sa_ids in gone.items():
            ch, now = by_conn[conn], self.now()
            self._dispatch(ch, [a for sa_id in sa_ids for a in ch.fsm.sa_down(sa_id, now)])
        for stale in todo.delete:
            ex = self._acp_ex if stale.namespace == "acp" else self._dull_ex
            await self._in(ex, xi.delete_if_id, stale.if_id)

    async def _adopt(self, adopt: reconcile.Adopt) -> Channel:
        if adopt.stale_interface:   # no SA behind it any more
            await self._in(self._acp_ex, xi.delete_if_id, adopt.if_id)
        ch = Channel(adopt.peer, adopt.dull_ifname, adopt.if_id, self._new_fsm(),
                     acp_ifname=adopt.acp_ifname, local_ll=adopt.local_ll,
                     prepared=True, kernel=True)   # its connection is loaded
        fsm = ch.fsm
        fsm.adopt(self.now(), self.adoption_grace)
        self.table.add(ch)
        actions: list[Action] = []
        for sa in adopt.sas:
            actions += fsm.sa_seen(sa.sa_id, sa.initiator, sa.remote_id)
            for child in sa.children:
                actions += fsm.child_up(sa.sa_id, child, sa.initiator, sa.remote_id)
        self._dispatch(ch, actions)
        return ch

    # --- control ---
    async def _cmd_channels(self, _request: dict[str, Any]) -> list[dict[str, Any]]:
        sas = []
        if self.running and self.driver is not None:
            with contextlib.suppress(DriverError):
                sas = await self._vici("list_sas")
        return self.table.entries(sas, self.now(), self.slots)

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "charon": self.charon.status(),
                "channels": self.table.entries([], self.now(), self.slots),
                "attempts": self.slots.status(),
                "parked": {"candidates": len(self.parking), "dropped": self.parking.dropped},
                "acp_address": str(self._acp_address) if self._acp_address else None}


__all__ = ["ChannelPart", "Channel", "State"]

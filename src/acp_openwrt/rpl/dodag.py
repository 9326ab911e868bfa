"""The RPL node for the ACP profile (RFC 6550 storing mode, OF0, instance 0; RFC 8994 §6.12.1).

Sans-I/O like aioquic: events go in (`receive`, `interface_up`, `interface_down`, `handle_timer`,
each with the current time), `Send` actions come out, `next_timer()` says when to call again and
`routes()` is the route set the installer should make true.

Loop avoidance beyond the rank rules (§8.2.2): a node whose parents are all gone either follows a
neighbour into another DODAG or detaches into its own floating DODAG (§8.2.2.6, preferred by RFC
8994), and then ignores the Version it left for `hold_down` seconds and any DIO of that Version
heard before the hold-down ended, so stale DIOs from its former sub-DODAG cannot pull it back.

Liberal in, strict out: DIOs of MOP 3, without a DODAG Configuration (RFC 6550 defaults) or with
a rank below ROOT_RANK, and DAOs without Transit Information are taken (unstrung sends all four);
what we send stays in the RFC 8994 profile. A DAO-ACK with status 0 means every Target is routed.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import random
from collections import Counter
from typing import Any

from . import constants as c
from . import sequence
from .actions import Send
from .dao import Advert, DaoSender
from .downward import DownwardTable, NeighborKey, acceptable_target, read_dao
from .messages import Dao, DaoAck, Dio, Dis, Message, decode_message
from .of0 import dag_rank
from .options import RFC6550_DEFAULTS, DodagConfiguration, RplDecodeError
from .parents import Choice, Neighbor, VersionKey, VersionMemory, compare_choices, dodag_order, pick
from .profile import RplConfig
from .routes import DEFAULT_PREFIX, Route, RouteKind
from .status import describe
from .trickle import Trickle

# Counters shown even at zero (`acpctl rpl --json`): what a liberal receiver took in, and refused.
EVENTS = ("dio_without_configuration", "dio_rank_below_root", "dio_mop_unsupported",
          "dao_without_transit", "dao_rejected", "dao_ack_rejections")


class RplNode:
    def __init__(self, config: RplConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._ifaces: dict[str, int] = {}  # interface -> OF0 rank factor
        self._neighbors: dict[NeighborKey, Neighbor] = {}
        self._downward = DownwardTable()
        # routes() is asked after every input (rpl/part.py); rebuilt only when what it reads
        # changed: O(routes) per DAO that changes something, not per DIO (issue 20)
        self._routes_key: tuple[Any, ...] | None = None
        self._routes: frozenset[Route] = frozenset()
        self._dao = DaoSender(c.RPL_DEFAULT_INSTANCE, config.dao_delay, config.dao_ack_timeout,
                              config.dao_retries)
        cfg = config.dodag
        self._trickle = Trickle(cfg.imin, cfg.dio_interval_doublings, cfg.dio_redundancy,
                                rng or random.Random())
        self.dodag_config = cfg
        self.dodag_id: ipaddress.IPv6Address | None = None
        self.version = sequence.INITIAL_SEQUENCE
        self.grounded = False
        self.preference = 0
        self.rank = c.INFINITE_RANK
        self.floating = False
        self.parents: list[NeighborKey] = []  # [0] is the preferred parent
        self.dtsn = sequence.INITIAL_SEQUENCE
        self._path_sequence = sequence.INITIAL_SEQUENCE
        self._float_version = sequence.INITIAL_SEQUENCE
        self._versions = VersionMemory(config.hold_down)
        self._refresh_at: float | None = None
        self._extra_targets: frozenset[ipaddress.IPv6Network] = frozenset()
        self.decode_errors = 0
        self.dropped = 0
        self.events: Counter[str] = Counter({name: 0 for name in EVENTS})
        self.mop = c.MOP_STORING_NO_MULTICAST
        if config.root:
            self.dodag_id = config.address
            self.grounded = config.grounded
            self.preference = config.preference
            self.rank = cfg.min_hop_rank_increase

    # ----------------------------------------------------------------- state
    @property
    def attached(self) -> bool:
        return self.dodag_id is not None

    @property
    def member(self) -> bool:
        """Joined a DODAG through parents (not a root of any kind)."""
        return self.attached and not self.config.root and not self.floating

    @property
    def role(self) -> str:
        if self.config.root:
            return "root"
        if self.floating:
            return "floating-root"
        return "member" if self.attached else "unattached"

    # ---------------------------------------------------------------- events
    def interface_up(self, ifname: str, now: float, rank_factor: int = c.HIGH_SPEED_FACTOR
                     ) -> list[Send]:
        """A new ACP interface: a DIO on it at once, and a DIS to hear the neighbour soon."""
        new = ifname not in self._ifaces
        self._ifaces[ifname] = rank_factor
        if not new:
            return self._evaluate(now)
        actions: list[Send] = []
        if self.attached:
            if not self._trickle.running:
                self._trickle.start(now)
            actions.append(Send(ifname, c.ALL_RPL_NODES, self._dio()))
        if not self.config.root:
            actions.append(Send(ifname, c.ALL_RPL_NODES, Dis()))
        return actions

    def interface_down(self, ifname: str, now: float) -> list[Send]:
        """Channel gone: its neighbours, parents and downward routes go with it (local repair)."""
        if self._ifaces.pop(ifname, None) is None:
            return []
        for key in [k for k in self._neighbors if k[0] == ifname]:
            del self._neighbors[key]
        for parent in [p for p in self._dao.parents() if p[0] == ifname]:
            self._dao.forget(parent)
        if self._downward.remove_interface(ifname):
            self._dao.schedule(now)
        return self._evaluate(now)

    def receive(self, ifname: str, src: ipaddress.IPv6Address | str, code: int,
                body: bytes | Message, now: float,
                dst: ipaddress.IPv6Address = c.ALL_RPL_NODES) -> list[Send]:
        """One received type-155 message (body bytes after the ICMPv6 header, or decoded)."""
        try:
            source = ipaddress.IPv6Address(src)
        except ValueError:
            self.dropped += 1
            return []
        if ifname not in self._ifaces or not source.is_link_local:
            self.dropped += 1
            return []
        if isinstance(body, (bytes, bytearray, memoryview)):
            try:
                message = decode_message(code, bytes(body))
            except RplDecodeError:
                self.decode_errors += 1
                return []
        else:
            message = body
        if isinstance(message, Dio):
            return self._on_dio((ifname, source), message, now)
        if isinstance(message, Dis):
            return self._on_dis((ifname, source), message, dst, now)
        if isinstance(message, Dao):
            return self._on_dao((ifname, source), message, now)
        if isinstance(message, DaoAck):
            return self._on_dao_ack((ifname, source), message, now)
        self.dropped += 1
        return []

    def handle_timer(self, now: float) -> list[Send]:
        actions: list[Send] = []
        if self._trickle.poll(now) and self.attached:
            actions += self._dio_all()
        evaluate = False
        if self._versions.hold_downs_ended(now):
            actions += [Send(i, c.ALL_RPL_NODES, Dis()) for i in sorted(self._ifaces)]
            evaluate = True
        timeout = self._neighbor_timeout()
        for key in [k for k, n in self._neighbors.items() if now - n.heard >= timeout]:
            del self._neighbors[key]
            evaluate = True
        if self._downward.expire(now):
            self._dao.schedule(now)
        resend, failed = self._dao.poll(now)
        actions += [Send(p[0], p[1], m) for p, m in resend]
        for parent in failed:
            self._penalize(parent, now)
            evaluate = True
        for n in self._neighbors.values():
            if n.failed_until is not None and n.failed_until <= now:
                n.failed_until = None
                evaluate = True
        if evaluate:
            actions += self._evaluate(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._dao.schedule(now)
        if self._dao.take_due(now):
            actions += self._flush_dao(now)
        return actions

    def next_timer(self) -> float | None:
        times = [t for t in (self._trickle.next_event(), self._dao.next_timer(),
                             self._downward.next_expiry(), self._refresh_at) if t is not None]
        times += self._versions.hold_down_ends
        if self._neighbors:
            timeout = self._neighbor_timeout()
            times.append(min(n.heard for n in self._neighbors.values()) + timeout)
            times += [n.failed_until for n in self._neighbors.values()
                      if n.failed_until is not None]
        return min(times) if times else None

    def set_targets(self, targets: frozenset[ipaddress.IPv6Network], now: float) -> list[Send]:
        """Extra DAO targets besides the node's own prefix, e.g. ACP connect subnets (RFC 8994
        §8.1.1); a change goes up in the next DAO, a removed target as a No-Path."""
        if targets == self._extra_targets:
            return []
        self._extra_targets = frozenset(targets)
        if self.parents:
            self._dao.schedule(now)
        return []

    @property
    def extra_targets(self) -> frozenset[ipaddress.IPv6Network]:
        return self._extra_targets

    def global_repair(self, now: float) -> list[Send]:
        """Root only: a new DODAG Version (an administrative action, RFC 8994 §6.12.1.7)."""
        if not self.config.root:
            raise ValueError("only a DODAG root starts a new DODAG Version")
        self.version = sequence.increment(self.version)
        self._trickle.reset(now)
        return self._dio_all()

    # ------------------------------------------------------------- messages
    def _on_dio(self, key: NeighborKey, dio: Dio, now: float) -> list[Send]:
        if dio.instance_id != c.RPL_DEFAULT_INSTANCE:
            self.dropped += 1
            return []
        if dio.mop not in c.SUPPORTED_MOPS:
            # MOP 0 and 1: a node that cannot honour the MOP may join only as a leaf (§9.2 rule
            # 1); we do not join such DODAGs at all.
            self.events["dio_mop_unsupported"] += 1
            return []
        old = self._neighbors.get(key)
        cfg = dio.configuration
        if cfg is None:
            self.events["dio_without_configuration"] += 1
            if old is not None and (old.dio.dodag_id, old.dio.version) == \
                    (dio.dodag_id, dio.version):
                cfg = old.config
        minhop = (cfg or self._assumed_config(dio)).min_hop_rank_increase
        if dio.rank < minhop:
            # A root MUST advertise ROOT_RANK = MinHopRankIncrease (§8.2.2.2 rule 2); unstrung's
            # roots advertise 1. Nothing legal lies below ROOT_RANK, so read it as ROOT_RANK: our
            # own rank stays above it, and any neighbour could claim ROOT_RANK itself anyway.
            self.events["dio_rank_below_root"] += 1
            dio = dataclasses.replace(dio, rank=minhop)
        self._neighbors[key] = Neighbor(key, dio, now, cfg,
                                        old.failed_until if old is not None else None)
        if self.attached and dio.dodag_id == self.dodag_id:
            order = sequence.compare(dio.version, self.version)
            if order == 0:
                self._trickle.heard_consistent()
            elif order == -1:
                self._trickle.reset(now)  # a neighbour on an old Version: tell it soon
        if key in self.parents and old is not None and \
                sequence.compare(dio.dtsn, old.dio.dtsn) == 1:
            self._dao.schedule(now)  # the parent asks for fresh DAOs (§9.6)
        return self._evaluate(now)

    def _on_dis(self, key: NeighborKey, dis: Dis, dst: ipaddress.IPv6Address,
                now: float) -> list[Send]:
        if not self.attached:
            return []
        wanted = dis.solicited
        if wanted is not None and (
                (wanted.instance_id is not None and wanted.instance_id != c.RPL_DEFAULT_INSTANCE)
                or (wanted.dodag_id is not None and wanted.dodag_id != self.dodag_id)
                or (wanted.version is not None and wanted.version != self.version)):
            return []
        if dst.is_multicast:
            self._trickle.reset(now)  # §8.3: a multicast DIS is an inconsistency
            return []
        return [Send(key[0], key[1], self._dio())]  # unicast DIS: unicast DIO, Trickle untouched

    def _on_dao(self, key: NeighborKey, dao: Dao, now: float) -> list[Send]:
        def answer(status: int, refused: str | None = None) -> list[Send]:
            if refused is not None:
                self.events[refused] += 1
                self.events["dao_rejected"] += 1
            if not dao.ack_requested:
                return []
            # The DODAGID is echoed when the DAO carried one: §6.5.1 allows the D flag with a
            # global instance, and a sunshine member ignores DAO-ACKs without it (never routes).
            return [Send(key[0], key[1], DaoAck(dao.instance_id, dao.sequence, status,
                                                dao.dodag_id))]

        if dao.instance_id != c.RPL_DEFAULT_INSTANCE:
            return answer(c.DAO_ACK_REJECT, "dao_other_instance")
        if not self.attached:
            return answer(c.DAO_ACK_REJECT, "dao_not_attached")
        if key in self.parents:
            return answer(c.DAO_ACK_REJECT, "dao_from_parent")  # it would make a loop
        if dao.dodag_id is not None and dao.dodag_id != self.dodag_id:
            return answer(c.DAO_ACK_REJECT, "dao_other_dodag")  # §9.3 rule 2
        updates, refused = read_dao(dao, self.dodag_config.default_lifetime, self._acceptable,
                                    self.config.accept_dao_without_transit)
        if refused is not None:
            return answer(c.DAO_ACK_REJECT, refused)
        changed = False
        if any(u.path_sequence is None for u in updates):
            self.events["dao_without_transit"] += 1
        for update in updates:
            path_sequence = update.path_sequence
            if path_sequence is None:
                # No Path Sequence from the owner: keep the one we hold (a refresh), or stamp our
                # own, which we then pass up in our DAOs' Transit for this target.
                held = self._downward.get(key, update.prefix)
                path_sequence = held.path_sequence if held is not None else self._path_sequence
            seconds = self.dodag_config.lifetime_seconds(update.path_lifetime)
            changed |= self._downward.update(key, update.prefix, path_sequence,
                                             update.path_lifetime, seconds, now)
        if changed and self.parents:
            self._dao.schedule(now)
        return answer(c.DAO_ACK_ACCEPT)

    def _acceptable(self, prefix: ipaddress.IPv6Network) -> bool:
        return acceptable_target(prefix, self.config.prefix) and not any(
            prefix.overlaps(own) for own in self._extra_targets)

    def _on_dao_ack(self, key: NeighborKey, ack: DaoAck, now: float) -> list[Send]:
        if ack.instance_id != c.RPL_DEFAULT_INSTANCE:
            self.dropped += 1
            return []
        if ack.dodag_id is not None and ack.dodag_id != self.dodag_id:
            self.events["dao_ack_other_dodag"] += 1  # not about the DAOs we sent in this DODAG
            return []
        if self._dao.acknowledge(key, ack.sequence, ack.status) is False:
            self.events["dao_ack_rejections"] += 1
            self._penalize(key, now)
            return self._evaluate(now)
        return []

    def _assumed_config(self, dio: Dio) -> DodagConfiguration:
        """The configuration a DIO without one runs on: ours if it is our Version, else RFC
        6550's defaults."""
        if self.attached and (dio.dodag_id, dio.version) == (self.dodag_id, self.version):
            return self.dodag_config
        return RFC6550_DEFAULTS

    def _penalize(self, key: NeighborKey, now: float) -> None:
        if key in self._neighbors:
            self._neighbors[key].failed_until = now + c.ACP_DAO_FAILURE_PENALTY

    # ------------------------------------------------------ parent selection
    def _usable(self, n: Neighbor) -> bool:
        dio = n.dio
        if n.key[0] not in self._ifaces or n.failed_until is not None \
                or dio.rank >= c.INFINITE_RANK:
            return False
        if dio.dodag_id == self.config.address:
            return False  # our own (possibly old floating) DODAG, or someone spoofing us
        if n.config is not None and n.config.ocp != c.OCP_OF0:
            return False
        return self._versions.fresh((dio.dodag_id, dio.version), n.heard)

    def _pick(self, key: VersionKey, members: list[Neighbor]) -> Choice | None:
        in_use = self.dodag_config if key == (self.dodag_id, self.version) else None
        lowest = self._versions.lowest.get(key)
        return pick(key, members, in_use, self.parents, self._ifaces, lowest,
                    self.config.max_parents)

    def _better_than_current(self, choice: Choice) -> bool:
        assert self.dodag_id is not None
        mine = (self.grounded, self.preference, int(self.dodag_id))
        theirs = dodag_order(choice.dio)
        if theirs != mine:
            return theirs > mine
        return sequence.compare(choice.key[1], self.version) == 1

    def _evaluate(self, now: float) -> list[Send]:
        if self.config.root:
            return []
        groups: dict[VersionKey, list[Neighbor]] = {}
        for n in self._neighbors.values():
            if self._usable(n):
                groups.setdefault((n.dio.dodag_id, n.dio.version), []).append(n)
        current = (self.dodag_id, self.version) if self.attached else None
        stay: Choice | None = None
        if current is not None:
            members = groups.pop(current, [])  # type: ignore[arg-type]
            if self.member:
                minhop = self.dodag_config.min_hop_rank_increase
                preferred = self.parents[0] if self.parents else None
                stay = self._pick(current, [  # type: ignore[arg-type]
                    n for n in members if n.key == preferred
                    or dag_rank(n.dio.rank, minhop) < dag_rank(self.rank, minhop)])
        options = []
        for key, members in groups.items():
            if current is not None and key[0] == current[0] and \
                    sequence.compare(key[1], current[1]) != 1:
                continue  # never go back to an older Version of our DODAG
            choice = self._pick(key, members)
            if choice is not None:
                options.append(choice)
        best = max(options, key=functools.cmp_to_key(compare_choices)) if options else None
        if best is not None and (not self.attached or (self.member and stay is None)
                                 or self._better_than_current(best)):
            return self._adopt(best, now)
        if stay is not None:
            return self._adopt(stay, now)
        if self.member:
            return self._detach(now)
        return []

    def _adopt(self, choice: Choice, now: float) -> list[Send]:
        actions: list[Send] = []
        old_key = (self.dodag_id, self.version) if self.attached else None
        changed = old_key != choice.key
        if changed:
            upgrade = old_key is not None and old_key[0] == choice.key[0] and \
                sequence.compare(choice.key[1], old_key[1]) == 1
            if self.member and old_key is not None and not upgrade:
                self._versions.hold_down(old_key, now)  # type: ignore[arg-type]
            self.dodag_id, self.version = choice.key
            self.grounded = choice.dio.grounded
            self.preference = choice.dio.preference
            self.floating = False
            self.dodag_config = choice.config
            self.mop = choice.dio.mop  # the root's MOP, which every member abides by (§9.2 rule 1)
            self._configure_trickle(now)
            self._path_sequence = sequence.increment(self._path_sequence)
            self._dao.schedule(now)  # a new Version or DODAG wants fresh DAOs, even to old parents
        actions += self._set_parents(choice.parents, now)
        rank_changed = choice.rank != self.rank
        self.rank = choice.rank
        self._versions.advertised(choice.key, self.rank)
        if changed:
            actions += self._dio_all()  # membership changed: tell the sub-DODAG at once
        elif rank_changed:
            self._trickle.reset(now)
        return actions

    def _detach(self, now: float) -> list[Send]:
        """No parent left in our Version: become root of a floating DODAG (§8.2.2.6)."""
        assert self.dodag_id is not None
        self._versions.hold_down((self.dodag_id, self.version), now)
        actions = self._set_parents([], now)
        self._float_version = sequence.increment(self._float_version)
        self.dodag_id, self.version = self.config.address, self._float_version
        self.grounded = False
        self.preference = self.config.preference
        self.floating = True
        self.mop = c.MOP_STORING_NO_MULTICAST  # our own DODAG: the profile's MOP
        self.rank = self.dodag_config.min_hop_rank_increase
        self._configure_trickle(now)
        return actions + self._dio_all()

    def _set_parents(self, parents: list[NeighborKey], now: float) -> list[Send]:
        old = self.parents
        self.parents = parents
        if set(old) == set(parents):
            return []
        actions: list[Send] = []
        for gone in set(old) - set(parents):
            if gone in self._neighbors:
                actions += [Send(gone[0], gone[1], m) for m in self._dao.withdraw_all(gone)]
            else:
                self._dao.forget(gone)
        for parent in parents:
            self._downward.remove_child(parent)  # a parent cannot also be below us
        if parents:
            self._path_sequence = sequence.increment(self._path_sequence)
            self._dao.schedule(now)
        return actions

    def _configure_trickle(self, now: float) -> None:
        cfg = self.dodag_config
        self._trickle.configure(cfg.imin, cfg.dio_interval_doublings, cfg.dio_redundancy, now)
        self._trickle.reset(now)

    def _neighbor_timeout(self) -> float:
        if self.config.neighbor_timeout is not None:
            return self.config.neighbor_timeout
        return 3 * self._trickle.imax

    # ---------------------------------------------------------------- output
    def _dio(self) -> Dio:
        assert self.dodag_id is not None
        # The DODAG Configuration goes in every DIO, also when our root sent none: then it says
        # which defaults we run on, and a unicast DIS MUST get one (§6.7.6).
        return Dio(c.RPL_DEFAULT_INSTANCE, self.version, self.rank, self.dodag_id, self.grounded,
                   self.mop, self.preference, self.dtsn, (self.dodag_config,))

    def _dio_all(self) -> list[Send]:
        dio = self._dio()
        return [Send(ifname, c.ALL_RPL_NODES, dio) for ifname in sorted(self._ifaces)]

    def _adverts(self) -> dict[ipaddress.IPv6Network, Advert]:
        adverts = {self.config.prefix: (self._path_sequence, self.dodag_config.default_lifetime)}
        for target in self._extra_targets:
            adverts[target] = (self._path_sequence, self.dodag_config.default_lifetime)
        for target, (_child, entry) in self._downward.best().items():
            adverts[target] = (entry.path_sequence, entry.path_lifetime)
        return adverts

    def _flush_dao(self, now: float) -> list[Send]:
        if not self.parents:
            return []
        adverts = self._adverts()
        actions = [Send(p[0], p[1], m) for p in self.parents
                   for m in self._dao.advertise(p, adverts, now)]
        lifetime = self.dodag_config.lifetime_seconds(self.dodag_config.default_lifetime)
        self._refresh_at = None if lifetime is None else now + lifetime / 3
        return actions

    def routes(self) -> frozenset[Route]:
        """The desired route set: default via the preferred parent, DAO targets via children,
        a black hole for the unused part of the node's own prefix (RFC 8994 §6.12.1.11).
        The same (cached) object while none of that changed."""
        key = (self.member, self.parents[0] if self.parents else None, self._downward.version)
        if key == self._routes_key:
            return self._routes
        routes: set[Route] = set()
        if self.member and self.parents:
            ifname, gateway = self.parents[0]
            routes.add(Route(DEFAULT_PREFIX, RouteKind.UNICAST, gateway, ifname))
        for target, ((ifname, gateway), _entry) in self._downward.best().items():
            routes.add(Route(target, RouteKind.UNICAST, gateway, ifname))
        if self.config.prefix.prefixlen < 128:
            routes.add(Route(self.config.prefix, RouteKind.BLACKHOLE))
        self._routes_key, self._routes = key, frozenset(routes)
        return self._routes

    def status(self) -> dict[str, Any]:
        """For `acpctl rpl --json`: role, rank, dodag_id, parents, children, routes."""
        return describe(self)

    def parent_rank(self, key: NeighborKey) -> int | None:
        n = self._neighbors.get(key)
        return n.dio.rank if n is not None else None

    def children(self) -> dict[NeighborKey, list[ipaddress.IPv6Network]]:
        """Neighbours that sent us DAOs, with the targets learned from each."""
        return self._downward.children()

    @property
    def interfaces(self) -> list[str]:
        return sorted(self._ifaces)

    @property
    def neighbor_count(self) -> int:
        return len(self._neighbors)

    @property
    def daos_acknowledged(self) -> int:
        """DAO-ACKs so far that accepted a DAO of ours: a parent routes to our targets."""
        return self._dao.acknowledged

    def counters(self) -> dict[str, int]:
        return {"decode_errors": self.decode_errors, "dropped": self.dropped,
                "dao_sent": self._dao.sent, "dao_retransmitted": self._dao.retransmitted,
                **self.events}

"""The RPL node for the ACP profile (RFC 6550 storing mode, OF0, instance 0; RFC 8994 §6.12.1).

Sans-I/O like aioquic: events go in (`receive`, `interface_up`, `interface_down`, `handle_timer`,
each with the current time), `Send` actions come out, `next_timer()` says when to call again and
`routes()` is the route set the installer should make true.

Loop avoidance beyond the rank rules (§8.2.2): a node whose parents are all gone either follows a
neighbour into another DODAG or detaches into its own floating DODAG (§8.2.2.6, preferred by RFC
8994), and then ignores the Version it left for `hold_down` seconds and any DIO of that Version
heard before the hold-down ended, so stale DIOs from its former sub-DODAG cannot pull it back.
"""
from __future__ import annotations

import functools
import ipaddress
import random
from dataclasses import dataclass
from typing import Any

from . import constants as c
from . import sequence
from .actions import Send
from .dao import Advert, DaoSender
from .downward import DownwardTable, NeighborKey
from .messages import Dao, DaoAck, Dio, Dis, Message, decode_message
from .of0 import dag_rank, rank_via
from .options import DodagConfiguration, RplDecodeError
from .profile import RplConfig
from .routes import DEFAULT_PREFIX, Route, RouteKind
from .trickle import Trickle

VersionKey = tuple[ipaddress.IPv6Address, int]  # (DODAGID, DODAGVersionNumber)
_MEMORY = 32  # Versions remembered for the L + DAGMaxRankIncrease rule and hold-downs


@dataclass
class Neighbor:
    key: NeighborKey
    dio: Dio
    heard: float
    config: DodagConfiguration | None = None
    failed_until: float | None = None  # DAOs went unacknowledged: not a parent until then


@dataclass(frozen=True)
class _Choice:
    key: VersionKey
    dio: Dio
    parents: list[NeighborKey]
    rank: int
    config: DodagConfiguration


def _dodag_order(dio: Dio) -> tuple[bool, int, int]:
    """OF0 §4.2.1: grounded first, then preference; the DODAGID breaks ties so islands merge."""
    return (dio.grounded, dio.preference, int(dio.dodag_id))


class RplNode:
    def __init__(self, config: RplConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._ifaces: dict[str, int] = {}  # interface -> OF0 rank factor
        self._neighbors: dict[NeighborKey, Neighbor] = {}
        self._downward = DownwardTable()
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
        self._lowest: dict[VersionKey, int] = {}
        self._hold_down: dict[VersionKey, float] = {}
        self._hold_down_ends: list[float] = []
        self._refresh_at: float | None = None
        self.decode_errors = 0
        self.dropped = 0
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
        ended = [t for t in self._hold_down_ends if t <= now]
        if ended:
            self._hold_down_ends = [t for t in self._hold_down_ends if t > now]
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
        times += self._hold_down_ends
        if self._neighbors:
            timeout = self._neighbor_timeout()
            times.append(min(n.heard for n in self._neighbors.values()) + timeout)
            times += [n.failed_until for n in self._neighbors.values()
                      if n.failed_until is not None]
        return min(times) if times else None

    def global_repair(self, now: float) -> list[Send]:
        """Root only: a new DODAG Version (an administrative action, RFC 8994 §6.12.1.7)."""
        if not self.config.root:
            raise ValueError("only a DODAG root starts a new DODAG Version")
        self.version = sequence.increment(self.version)
        self._trickle.reset(now)
        return self._dio_all()

    # ------------------------------------------------------------- messages
    def _on_dio(self, key: NeighborKey, dio: Dio, now: float) -> list[Send]:
        cfg = dio.configuration
        minhop = (cfg or self.dodag_config).min_hop_rank_increase
        if dio.instance_id != c.RPL_DEFAULT_INSTANCE or dio.rank < minhop:
            self.dropped += 1  # another instance, or a rank below ROOT_RANK: impossible, hostile
            return []
        old = self._neighbors.get(key)
        if cfg is None and old is not None and \
                (old.dio.dodag_id, old.dio.version) == (dio.dodag_id, dio.version):
            cfg = old.config
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
        if dao.instance_id != c.RPL_DEFAULT_INSTANCE:
            self.dropped += 1
            return []

        def ack(status: int) -> list[Send]:
            if not dao.ack_requested:
                return []
            return [Send(key[0], key[1], DaoAck(c.RPL_DEFAULT_INSTANCE, dao.sequence, status))]

        if not self.attached or key in self.parents:
            return ack(c.DAO_ACK_REJECT)  # a DAO from our own parent would make a loop
        changed = False
        for targets, transits in dao.groups():
            transit = transits[0]
            seconds = self.dodag_config.lifetime_seconds(transit.path_lifetime)
            for target in targets:
                if self._acceptable_target(target.prefix):
                    changed |= self._downward.update(key, target.prefix, transit.path_sequence,
                                                     transit.path_lifetime, seconds, now)
        if changed and self.parents:
            self._dao.schedule(now)
        return ack(c.DAO_ACK_ACCEPT)

    def _on_dao_ack(self, key: NeighborKey, ack: DaoAck, now: float) -> list[Send]:
        if self._dao.acknowledge(key, ack.sequence, ack.status) is False:
            self._penalize(key, now)
            return self._evaluate(now)
        return []

    def _penalize(self, key: NeighborKey, now: float) -> None:
        if key in self._neighbors:
            self._neighbors[key].failed_until = now + c.ACP_DAO_FAILURE_PENALTY

    def _acceptable_target(self, prefix: ipaddress.IPv6Network) -> bool:
        address = prefix.network_address
        return (prefix.prefixlen >= c.MIN_TARGET_PREFIX_LENGTH
                and not prefix.overlaps(self.config.prefix)
                and not (address.is_link_local or address.is_multicast or address.is_loopback
                         or address.is_unspecified))

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
        until = self._hold_down.get((dio.dodag_id, dio.version))
        return until is None or n.heard >= until

    def _pick(self, key: VersionKey, members: list[Neighbor]) -> _Choice | None:
        if not members:
            return None
        cfg = next((n.config for n in members if n.config is not None), None) or \
            (self.dodag_config if key == (self.dodag_id, self.version) else DodagConfiguration())
        minhop = cfg.min_hop_rank_increase
        preferred_key = self.parents[0] if self.parents else None
        current = set(self.parents)

        def resulting(n: Neighbor) -> int:
            return rank_via(n.dio.rank, minhop, self._ifaces.get(n.key[0], 1))

        ordered = sorted(members, key=lambda n: (resulting(n), n.key != preferred_key,
                                                 n.key not in current, n.key[0], int(n.key[1])))
        rank = resulting(ordered[0])
        lowest = self._lowest.get(key)
        if rank >= c.INFINITE_RANK or (lowest is not None and
                                       rank > lowest + cfg.max_rank_increase):
            return None  # §8.2.2.4 rule 3
        parents = [ordered[0].key] + [n.key for n in ordered[1:]
                                      if dag_rank(n.dio.rank, minhop) < dag_rank(rank, minhop)]
        return _Choice(key, ordered[0].dio, parents[:self.config.max_parents], rank, cfg)

    def _better_than_current(self, choice: _Choice) -> bool:
        assert self.dodag_id is not None
        mine = (self.grounded, self.preference, int(self.dodag_id))
        theirs = _dodag_order(choice.dio)
        if theirs != mine:
            return theirs > mine
        return sequence.compare(choice.key[1], self.version) == 1

    @staticmethod
    def _compare_choices(a: _Choice, b: _Choice) -> int:
        if _dodag_order(a.dio) != _dodag_order(b.dio):
            return 1 if _dodag_order(a.dio) > _dodag_order(b.dio) else -1
        order = sequence.compare(a.key[1], b.key[1]) or 0
        if order:
            return order
        return (a.rank < b.rank) - (a.rank > b.rank)

    def _evaluate(self, now: float) -> list[Send]:
        if self.config.root:
            return []
        groups: dict[VersionKey, list[Neighbor]] = {}
        for n in self._neighbors.values():
            if self._usable(n):
                groups.setdefault((n.dio.dodag_id, n.dio.version), []).append(n)
        current = (self.dodag_id, self.version) if self.attached else None
        stay: _Choice | None = None
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
        best = max(options, key=functools.cmp_to_key(self._compare_choices)) if options else None
        if best is not None and (not self.attached or (self.member and stay is None)
                                 or self._better_than_current(best)):
            return self._adopt(best, now)
        if stay is not None:
            return self._adopt(stay, now)
        if self.member:
            return self._detach(now)
        return []

    def _adopt(self, choice: _Choice, now: float) -> list[Send]:
        actions: list[Send] = []
        old_key = (self.dodag_id, self.version) if self.attached else None
        changed = old_key != choice.key
        if changed:
            upgrade = old_key is not None and old_key[0] == choice.key[0] and \
                sequence.compare(choice.key[1], old_key[1]) == 1
            if self.member and old_key is not None and not upgrade:
                self._set_hold_down(old_key, now)  # type: ignore[arg-type]
            self.dodag_id, self.version = choice.key
            self.grounded = choice.dio.grounded
            self.preference = choice.dio.preference
            self.floating = False
            self.dodag_config = choice.config
            self._configure_trickle(now)
            self._path_sequence = sequence.increment(self._path_sequence)
            self._dao.schedule(now)  # a new Version or DODAG wants fresh DAOs, even to old parents
        actions += self._set_parents(choice.parents, now)
        rank_changed = choice.rank != self.rank
        self.rank = choice.rank
        self._remember(self._lowest, choice.key, min(self._lowest.get(choice.key, self.rank),
                                                     self.rank))
        if changed:
            actions += self._dio_all()  # membership changed: tell the sub-DODAG at once
        elif rank_changed:
            self._trickle.reset(now)
        return actions

    def _detach(self, now: float) -> list[Send]:
        """No parent left in our Version: become root of a floating DODAG (§8.2.2.6)."""
        assert self.dodag_id is not None
        self._set_hold_down((self.dodag_id, self.version), now)
        actions = self._set_parents([], now)
        self._float_version = sequence.increment(self._float_version)
        self.dodag_id, self.version = self.config.address, self._float_version
        self.grounded = False
        self.preference = self.config.preference
        self.floating = True
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

    def _set_hold_down(self, key: VersionKey, now: float) -> None:
        self._remember(self._hold_down, key, now + self.config.hold_down)
        self._hold_down_ends.append(now + self.config.hold_down)

    @staticmethod
    def _remember(table: dict[VersionKey, Any], key: VersionKey, value: Any) -> None:
        table.pop(key, None)
        table[key] = value
        while len(table) > _MEMORY:
            del table[next(iter(table))]

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
        return Dio(c.RPL_DEFAULT_INSTANCE, self.version, self.rank, self.dodag_id, self.grounded,
                   c.MOP_STORING_NO_MULTICAST, self.preference, self.dtsn, (self.dodag_config,))

    def _dio_all(self) -> list[Send]:
        dio = self._dio()
        return [Send(ifname, c.ALL_RPL_NODES, dio) for ifname in sorted(self._ifaces)]

    def _adverts(self) -> dict[ipaddress.IPv6Network, Advert]:
        adverts = {self.config.prefix: (self._path_sequence, self.dodag_config.default_lifetime)}
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
        a black hole for the unused part of the node's own prefix (RFC 8994 §6.12.1.11)."""
        routes: set[Route] = set()
        if self.member and self.parents:
            ifname, gateway = self.parents[0]
            routes.add(Route(DEFAULT_PREFIX, RouteKind.UNICAST, gateway, ifname))
        for target, ((ifname, gateway), _entry) in self._downward.best().items():
            routes.add(Route(target, RouteKind.UNICAST, gateway, ifname))
        if self.config.prefix.prefixlen < 128:
            routes.add(Route(self.config.prefix, RouteKind.BLACKHOLE))
        return frozenset(routes)

    def status(self) -> dict[str, Any]:
        """For `acpctl rpl --json`."""
        parents = []
        for i, key in enumerate(self.parents):
            n = self._neighbors.get(key)
            parents.append({"address": str(key[1]), "ifname": key[0], "preferred": i == 0,
                            "rank": n.dio.rank if n is not None else None})
        children = [{"address": str(k[1]), "ifname": k[0], "targets": sorted(map(str, t))}
                    for k, t in sorted(self._downward.children().items(),
                                       key=lambda kv: (kv[0][0], int(kv[0][1])))]
        minhop = self.dodag_config.min_hop_rank_increase
        return {
            "role": self.role,
            "address": str(self.config.address),
            "prefix": str(self.config.prefix),
            "rank": self.rank if self.attached else None,
            "dag_rank": dag_rank(self.rank, minhop) if self.attached else None,
            "dodag_id": str(self.dodag_id) if self.dodag_id is not None else None,
            "version": self.version if self.attached else None,
            "grounded": self.grounded,
            "preference": self.preference,
            "interfaces": sorted(self._ifaces),
            "neighbors": len(self._neighbors),
            "parents": parents,
            "children": children,
            "routes": [r.to_json() for r in sorted(self.routes(), key=lambda r: (
                r.prefix.prefixlen, int(r.prefix.network_address)))],
            "counters": {"decode_errors": self.decode_errors, "dropped": self.dropped,
                         "dao_sent": self._dao.sent, "dao_retransmitted": self._dao.retransmitted},
        }

"""DAO transmission (RFC 6550 §9, RFC 8994 §6.12.1.4): full-state DAOs to each DAO parent, K flag,
DAO-ACK with retries, No-Path for targets a parent was told about and that are gone.

Each DAO to a parent carries every current target, so a newer DAO supersedes older unacknowledged
ones; only the latest is retried.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import constants as c
from . import sequence
from .downward import NeighborKey
from .messages import Dao
from .options import Option, RplTarget, TransitInformation, encode_option

Advert = tuple[int, int]  # (path sequence, path lifetime in Lifetime Units; 0 = No-Path)


@dataclass
class _Pending:
    message: Dao
    deadline: float
    retries: int


@dataclass
class _ParentState:
    told: dict[ipaddress.IPv6Network, int] = field(default_factory=dict)  # target -> path seq
    pending: dict[int, _Pending] = field(default_factory=dict)


class DaoSender:
    def __init__(self, instance_id: int = c.RPL_DEFAULT_INSTANCE, delay: float = c.ACP_DAO_DELAY,
                 ack_timeout: float = c.DAO_ACK_TIMEOUT, retries: int = c.DAO_RETRIES) -> None:
        self.instance_id = instance_id
        self.delay = delay
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.sequence = sequence.INITIAL_SEQUENCE
        self._parents: dict[NeighborKey, _ParentState] = {}
        self._due: float | None = None
        self.sent = 0
        self.retransmitted = 0
        self.acknowledged = 0   # DAO-ACKs that accepted a DAO of ours

    def schedule(self, now: float) -> None:
        """DelayDAO: not restarted by further changes (§9.5)."""
        if self._due is None:
            self._due = now + self.delay

    def take_due(self, now: float) -> bool:
        if self._due is not None and now >= self._due:
            self._due = None
            return True
        return False

    def next_timer(self) -> float | None:
        times = [p.deadline for s in self._parents.values() for p in s.pending.values()]
        if self._due is not None:
            times.append(self._due)
        return min(times) if times else None

    def advertise(self, parent: NeighborKey, adverts: dict[ipaddress.IPv6Network, Advert],
                  now: float) -> list[Dao]:
        """DAOs (K set) telling parent about every advert, plus No-Paths for what went away."""
        state = self._parents.setdefault(parent, _ParentState())
        entries = dict(adverts)
        for target, path_seq in state.told.items():
            if target not in entries:
                entries[target] = (path_seq, c.NO_PATH_LIFETIME)
        messages = self._pack(entries, ack=True)
        state.pending = {m.sequence: _Pending(m, now + self.ack_timeout, self.retries)
                         for m in messages}
        state.told = {t: a[0] for t, a in adverts.items() if a[1] != c.NO_PATH_LIFETIME}
        self.sent += len(messages)
        return messages

    def withdraw_all(self, parent: NeighborKey) -> list[Dao]:
        """No-Path DAOs (no K) for a parent we stop using while it is still reachable."""
        state = self._parents.pop(parent, None)
        if state is None or not state.told:
            return []
        return self._pack({t: (s, c.NO_PATH_LIFETIME) for t, s in state.told.items()}, ack=False)

    def forget(self, parent: NeighborKey) -> None:
        self._parents.pop(parent, None)

    def parents(self) -> list[NeighborKey]:
        return list(self._parents)

    def acknowledge(self, parent: NeighborKey, dao_sequence: int, status: int) -> bool | None:
        """True: accepted; False: rejected (the parent refuses us); None: not ours / stale."""
        state = self._parents.get(parent)
        if state is None or state.pending.pop(dao_sequence, None) is None:
            return None
        if status >= c.DAO_ACK_REJECT:
            self._parents.pop(parent, None)
            return False
        self.acknowledged += 1
        return True

    def poll(self, now: float) -> tuple[list[tuple[NeighborKey, Dao]], list[NeighborKey]]:
        """Retransmissions due and parents that never acknowledged (their state is dropped)."""
        resend: list[tuple[NeighborKey, Dao]] = []
        failed: list[NeighborKey] = []
        for parent, state in list(self._parents.items()):
            for _seq, pending in list(state.pending.items()):
                if now < pending.deadline:
                    continue
                if pending.retries <= 0:
                    failed.append(parent)
                    del self._parents[parent]
                    break
                pending.retries -= 1
                pending.deadline = now + self.ack_timeout
                resend.append((parent, pending.message))
                self.retransmitted += 1
        return resend, failed

    def _pack(self, entries: dict[ipaddress.IPv6Network, Advert], ack: bool) -> list[Dao]:
        """Targets sharing (path sequence, lifetime) share one Transit; split below the MTU."""
        ordered = sorted(entries.items(), key=lambda kv: (kv[1], kv[0].prefixlen,
                                                          int(kv[0].network_address)))
        chunks: list[list[Option]] = []
        current: list[Option] = []
        size = 4
        i = 0
        while i < len(ordered):
            advert = ordered[i][1]
            group = [RplTarget(ordered[i][0])]
            i += 1
            while i < len(ordered) and ordered[i][1] == advert and len(group) < 32:
                group.append(RplTarget(ordered[i][0]))
                i += 1
            transit = TransitInformation(path_sequence=advert[0], path_lifetime=advert[1])
            group_size = sum(len(encode_option(o)) for o in group) + 6
            if current and size + group_size > c.MAX_DAO_BODY:
                chunks.append(current)
                current, size = [], 4
            current.extend(group)
            current.append(transit)
            size += group_size
        if current:
            chunks.append(current)
        messages = []
        for options in chunks:
            self.sequence = sequence.increment(self.sequence)
            messages.append(Dao(self.instance_id, self.sequence, ack, None, tuple(options)))
        return messages

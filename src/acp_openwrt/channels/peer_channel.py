"""The life of one secure channel to one neighbour on one link, without I/O (RFC 8994 §6.6-6.7).

Inputs are facts (adjacency up/down, SA up/down, the peer check's verdict, an initiation that
failed), each with the time `now`; outputs are actions for the service to carry out. It is a
protocol core (docs/core-contract.md): `next_timer()` says when it next has work of its own (the
next attempt after a back-off, the end of an adopted channel's grace), `handle_timer(now)` does
it; the channel table gathers the timers of all channels for the part's one loop timer. Rules:
  * Before the first SA to the peer authenticates, both sides may initiate (§6.6 allows it).
  * Once one does, the node with the higher ACP address is the Decider, the other the
    Follower (A.10: the 128-bit addresses compared as unsigned integers; no address loses).
    The Follower never initiates again while it knows its role; the Decider keeps one IKE SA
    and terminates duplicates (simultaneous starts leave two otherwise: lab-notes §3).
  * After an acpd restart a channel found in charon is adopted; if its adjacency is not
    heard again within the grace, it is removed as if the adjacency went down.
  * A failed attempt *as initiator* backs off exponentially, 10 s doubling to 600 s (§6.7),
    each delay jittered by up to ±20 % when a random source is given (many candidates that
    failed together must not come back together); failures as responder never throttle our
    own attempts.
  * Work is bounded (issue 15): nothing is prepared in charon or the kernel when a neighbour
    is heard, only when its attempt gets a slot (attempts.py); an attempt the peer never
    answered releases all of it again (`Release`), unless the peer was verified once (a real
    neighbour stays ready to answer its initiations). A peer that knocks (sends us IKE while
    we have nothing loaded for it) is tried at once, ahead of the others.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

INITIAL_RETRY = 10.0
MAX_RETRY = 600.0
JITTER = 0.2


class Role(enum.StrEnum):
    UNKNOWN = "unknown"
    DECIDER = "decider"
    FOLLOWER = "follower"


class State(enum.StrEnum):
    IDLE = "idle"              # no adjacency
    CONNECTING = "connecting"  # adjacency, no verified CHILD SA yet
    UP = "up"                  # a verified SA with a CHILD SA: interface active in ACP


# --- actions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepare:
    """Make sure the xfrm interface (in DULL), the peer route and the connection exist."""


@dataclass(frozen=True)
class Initiate:
    """Ask for an initiation slot; `urgent`: ahead of the others on the link (a knock)."""
    urgent: bool = False


@dataclass(frozen=True)
class Verify:
    """Run the membership check on the certificate behind this SA."""
    sa_id: str
    remote_id: str


@dataclass(frozen=True)
class Terminate:
    sa_id: str
    reason: str


@dataclass(frozen=True)
class Activate:
    """CHILD SA up with a verified peer: move the interface into ACP; ChannelUp."""
    peer_address: int
    peer_node_name: str


@dataclass(frozen=True)
class Deactivate:
    """No verified CHILD SA left: take the interface out of service; ChannelDown."""
    reason: str


ADJACENCY_GONE = "adjacency gone"
GRACE_OVER = "adopted, its adjacency not heard within the grace"


@dataclass(frozen=True)
class Remove:
    """The adjacency is gone: terminate these SAs, unload the connection, delete it all."""
    sa_ids: tuple[str, ...]
    reason: str = ADJACENCY_GONE


@dataclass(frozen=True)
class Release:
    """Our attempt was never answered: drop its IKE SAs, connection, interface and route, but
    keep the candidate (its next attempt prepares them again)."""


Action = Prepare | Initiate | Verify | Terminate | Activate | Deactivate | Remove | Release


@dataclass
class SaInfo:
    initiator: bool
    remote_id: str
    verified: bool = False
    rejected: bool = False
    peer_address: int | None = None
    peer_node_name: str | None = None
    children: set[str] = field(default_factory=set)


def role_for(mine: int | None, peer: int | None) -> Role:
    """Higher ACP address decides; a node without an address (or a tie) follows."""
    if mine is None or peer is None:
        return Role.FOLLOWER if mine is None else Role.DECIDER
    return Role.DECIDER if mine > peer else Role.FOLLOWER


class PeerChannel:
    """One neighbour (link-local address) on one DULL link."""

    def __init__(self, my_address: int | None, *, initial_retry: float = INITIAL_RETRY,
                 max_retry: float = MAX_RETRY, rng: random.Random | None = None) -> None:
        self.my_address = my_address
        self.initial_retry, self.max_retry = initial_retry, max_retry
        self.rng = rng
        self.state = State.IDLE
        self.role = Role.UNKNOWN
        self.sas: dict[str, SaInfo] = {}
        self.active = False
        self.peer_address: int | None = None
        self.peer_node_name: str | None = None
        self.pending = False          # our initiation is in flight
        self.retry_at: float | None = None
        self.backoff = initial_retry
        self.failures = 0
        self.last_error: str | None = None
        self.verified_once = False    # a real neighbour: keep its connection loaded
        self.peer_ike_id: str | None = None   # its IKE identity, as last verified
        self.adopted_until: float | None = None   # adopted: removed then unless heard again

    # --- queries ---
    def may_initiate(self) -> bool:
        """An IKE SA without a CHILD SA does not block: charon reuses it for the new CHILD."""
        return (self.state is State.CONNECTING and self.role is not Role.FOLLOWER
                and not self.pending and not self._carrying())

    def wants_attempt(self) -> bool:
        """Still worth the slot it waited for (it may have come up as responder meanwhile)."""
        return (self.state is State.CONNECTING and self.role is not Role.FOLLOWER
                and not self._carrying())

    def deadline(self) -> float | None:
        """When the next attempt is due, for the operator (even if another is in flight)."""
        return self.retry_at if self.state is State.CONNECTING else None

    def next_timer(self) -> float | None:
        """When handle_timer has work: the end of the adoption grace, or the next attempt if
        one may start then (an attempt in flight, a Follower's role or a carrying SA change
        only by an input, after which the edge asks again)."""
        due = self.retry_at if self.retry_at is not None and self.may_initiate() else None
        if self.adopted_until is not None and (due is None or self.adopted_until < due):
            return self.adopted_until
        return due

    def handle_timer(self, now: float) -> list[Action]:
        if self.adopted_until is not None and now >= self.adopted_until:
            return self.adjacency_down(now, GRACE_OVER)
        return self.tick(now)

    def _verified_sas(self) -> list[str]:
        return [k for k, v in self.sas.items() if v.verified]

    def _carrying(self) -> list[str]:
        return [k for k, v in self.sas.items() if v.verified and v.children]

    def _may_carry(self) -> bool:
        """A CHILD SA that is verified or still being checked (not refused, not a deleted
        duplicate): the channel survives the loss of another SA on it."""
        return any(v.children and not v.rejected for v in self.sas.values())

    # --- inputs ---
    def adjacency_up(self, now: float) -> list[Action]:
        """Also for an adjacency heard again: a channel adopted after a restart, or one waiting
        with nothing scheduled, gets an attempt now."""
        self.adopted_until = None
        if self.state is not State.IDLE:
            if self.retry_at is None and not self.sas and not self.pending:
                self.retry_at = now
            return self.tick(now)
        self.state = State.CONNECTING
        self.retry_at = now
        return self.tick(now)

    def adopt(self, now: float, grace: float) -> None:
        """A connection found in charon after an acpd restart: known, but no attempt yet; if
        its adjacency is not heard within `grace` seconds, handle_timer removes it."""
        if self.state is State.IDLE:
            self.state, self.retry_at = State.CONNECTING, None
        self.adopted_until = now + grace

    def charon_restarted(self, now: float) -> list[Action]:
        """A new charon holds no SA: start over as before the first SA, roles forgotten, at once.

        Follower included: the peer still holds its old SAs and would only learn of the loss by
        DPD; our new initiation carries INITIAL_CONTACT, which makes it drop them at once."""
        was_active = self.active
        self.sas.clear()
        self.active, self.pending = False, False
        self.role = Role.UNKNOWN
        self.backoff, self.failures = self.initial_retry, 0
        if self.state is State.IDLE:
            return []
        self.state, self.retry_at = State.CONNECTING, now
        return ([Deactivate("charon restarted")] if was_active else []) + self.tick(now)

    def adjacency_down(self, now: float, reason: str = ADJACENCY_GONE) -> list[Action]:
        ids = tuple(self.sas)
        self.__init__(self.my_address, initial_retry=self.initial_retry,  # type: ignore[misc]
                      max_retry=self.max_retry, rng=self.rng)
        return [Remove(ids, reason)]

    def knocked(self, now: float) -> list[Action]:
        """The peer sent us IKE_SA_INIT while we had no connection for it (charon answered
        NO_PROPOSAL_CHOSEN): it is alive. Try it now, ahead of the line, back-off or not."""
        if self.state is not State.CONNECTING or self.pending or not self.wants_attempt():
            return []
        self.retry_at = now
        actions = self.tick(now)
        return [Initiate(urgent=True) if isinstance(a, Initiate) else a for a in actions]

    def tick(self, now: float) -> list[Action]:
        if self.retry_at is None or now < self.retry_at or not self.may_initiate():
            return []
        self.retry_at = None
        self.pending = True
        return [Initiate()]

    def initiate_failed(self, now: float, reason: str, answered: bool = True) -> list[Action]:
        """`answered`: the peer answered at all (a refusal is an answer; silence is not)."""
        self.pending = False
        if self.state is State.IDLE or self._verified_sas():
            return []  # e.g. the Decider deleted our duplicate: not a failure of the channel
        self._failed(now, reason)
        if not answered and not self.verified_once and not self.sas:
            return [Release()]
        return []

    def attempt_dropped(self) -> None:
        """The queued attempt was not made after all (it came up meanwhile, or went away)."""
        self.pending = False

    def initiate_succeeded(self) -> None:
        self.pending = False

    def _failed(self, now: float, reason: str) -> None:
        self.last_error = reason
        self.failures += 1
        if self.role is not Role.FOLLOWER:
            self.retry_at = now + self._jittered(self.backoff)
        self.backoff = min(self.backoff * 2, self.max_retry)

    def _jittered(self, delay: float) -> float:
        return delay if self.rng is None else delay * self.rng.uniform(1 - JITTER, 1 + JITTER)

    def sa_seen(self, sa_id: str, initiator: bool, remote_id: str) -> list[Action]:
        """An IKE SA to this peer is established (ike-updown, or a child event came first)."""
        if self.state is State.IDLE or sa_id in self.sas:
            return []
        self.sas[sa_id] = SaInfo(initiator, remote_id)
        return [Verify(sa_id, remote_id)]

    def peer_verified(self, sa_id: str, peer_address: int, node_name: str,
                      now: float) -> list[Action]:
        sa = self.sas.get(sa_id)
        if sa is None or self.state is State.IDLE:
            return []
        sa.verified, sa.peer_address, sa.peer_node_name = True, peer_address, node_name
        self.verified_once, self.peer_ike_id = True, sa.remote_id
        self.backoff, self.retry_at, self.failures = self.initial_retry, None, 0
        self.role = role_for(self.my_address, peer_address)
        return self._dedupe() + self._maybe_activate()

    def peer_rejected(self, sa_id: str, reason: str, now: float) -> list[Action]:
        sa = self.sas.get(sa_id)
        if sa is None:
            return []
        sa.rejected = True
        if sa.initiator:
            self._failed(now, reason)
        else:
            self.last_error = reason
        return [Terminate(sa_id, reason)] + self._after_loss(now, reason)

    def sa_down(self, sa_id: str, now: float) -> list[Action]:
        if self.sas.pop(sa_id, None) is None:
            return []
        return self._after_loss(now, "IKE SA closed")

    def child_up(self, sa_id: str, child_id: str, initiator: bool,
                 remote_id: str) -> list[Action]:
        actions = self.sa_seen(sa_id, initiator, remote_id)
        sa = self.sas.get(sa_id)
        if sa is None:
            return actions
        sa.children.add(child_id)
        return actions + self._maybe_activate()

    def child_down(self, sa_id: str, child_id: str, now: float) -> list[Action]:
        sa = self.sas.get(sa_id)
        if sa is None or child_id not in sa.children:
            return []
        sa.children.discard(child_id)
        return self._after_loss(now, "CHILD SA closed")

    def ike_rekeyed(self, old_id: str, new_id: str) -> None:
        if old_id in self.sas and new_id not in self.sas:
            self.sas[new_id] = self.sas.pop(old_id)

    def child_rekeyed(self, sa_id: str, old_id: str, new_id: str) -> None:
        sa = self.sas.get(sa_id)
        if sa is not None and old_id in sa.children:
            sa.children.discard(old_id)
            sa.children.add(new_id)

    # --- internals ---
    def _after_loss(self, now: float, reason: str) -> list[Action]:
        if not self.active or self._may_carry():
            return []
        self.active = False
        self.state = State.CONNECTING
        if self.role is not Role.FOLLOWER:
            self.retry_at = now + self._jittered(self.backoff)
        return [Deactivate(reason)]

    def _maybe_activate(self) -> list[Action]:
        carrying = self._carrying()
        if self.active or not carrying:
            return []
        sa = self.sas[carrying[0]]
        assert sa.peer_address is not None and sa.peer_node_name is not None
        self.active, self.state = True, State.UP
        self.peer_address, self.peer_node_name = sa.peer_address, sa.peer_node_name
        self.last_error = None
        return [Activate(sa.peer_address, sa.peer_node_name)]

    def _dedupe(self) -> list[Action]:
        """Decider only: keep one verified IKE SA, the newest of those carrying a CHILD SA (after
        a peer restarted, the older one may be dead and only waiting for DPD)."""
        verified = self._verified_sas()
        if self.role is not Role.DECIDER or len(verified) < 2:
            return []

        def rank(sa_id: str) -> tuple[int, int]:
            number = int(sa_id) if sa_id.isdigit() else 0
            return (0 if self.sas[sa_id].children else 1, -number)

        keep = min(verified, key=rank)
        out: list[Action] = []
        for sa_id in verified:
            if sa_id != keep:
                self.sas[sa_id].verified = False  # no longer counts while it is torn down
                self.sas[sa_id].rejected = True
                out.append(Terminate(sa_id, "duplicate IKE SA (Decider keeps one)"))
        return out

"""The per-peer channel state machine: Decider/Follower, duplicates, backoff, teardown."""
from __future__ import annotations

import random

from acp_openwrt.channels.peer_channel import (
    GRACE_OVER,
    Activate,
    Deactivate,
    Initiate,
    PeerChannel,
    Release,
    Remove,
    Role,
    State,
    Terminate,
    Verify,
    role_for,
)

LOW, HIGH = 0xFD00_0000_0000_0000_0000_0000_0000_0002, 0xFD00_0000_0000_0000_0000_0000_0000_0004


def up_channel(mine: int, peer: int, *, initiator: bool = True) -> PeerChannel:
    ch = PeerChannel(mine)
    assert ch.adjacency_up(0.0) == [Initiate()]
    ch.initiate_succeeded()
    assert ch.sa_seen("1", initiator, "peer") == [Verify("1", "peer")]
    assert ch.child_up("1", "c1", initiator, "peer") == []     # not verified yet: no interface
    assert ch.peer_verified("1", peer, "peer-name", 1.0) == [Activate(peer, "peer-name")]
    assert ch.state is State.UP
    return ch


def test_role_compares_acp_addresses_as_integers() -> None:
    assert role_for(HIGH, LOW) is Role.DECIDER
    assert role_for(LOW, HIGH) is Role.FOLLOWER
    assert role_for(None, LOW) is Role.FOLLOWER
    assert role_for(LOW, None) is Role.DECIDER


def test_both_may_initiate_before_authentication() -> None:
    for mine in (LOW, HIGH):
        assert PeerChannel(mine).adjacency_up(0.0) == [Initiate()]


def test_decider_deletes_the_duplicate_and_keeps_the_newest_carrying_one() -> None:
    ch = up_channel(HIGH, LOW)
    assert ch.role is Role.DECIDER
    assert ch.sa_seen("2", False, "peer") == [Verify("2", "peer")]
    ch.child_up("2", "c2", False, "peer")
    actions = ch.peer_verified("2", LOW, "peer-name", 2.0)
    assert actions == [Terminate("1", "duplicate IKE SA (Decider keeps one)")]
    assert ch.sa_down("1", 3.0) == []          # the kept SA still carries the channel
    assert ch.state is State.UP


def test_decider_keeps_a_carrying_sa_over_a_newer_bare_one() -> None:
    ch = up_channel(HIGH, LOW)
    ch.sa_seen("2", False, "peer")
    assert ch.peer_verified("2", LOW, "peer-name", 2.0) == [
        Terminate("2", "duplicate IKE SA (Decider keeps one)")]


def test_follower_never_deletes_and_never_initiates_again() -> None:
    ch = up_channel(LOW, HIGH)
    assert ch.role is Role.FOLLOWER
    ch.sa_seen("2", False, "peer")
    ch.child_up("2", "c2", False, "peer")
    assert ch.peer_verified("2", HIGH, "peer-name", 2.0) == []
    assert ch.sa_down("1", 3.0) == []           # SA 2 still carries it
    assert ch.sa_down("2", 4.0) == [Deactivate("IKE SA closed")]
    assert ch.state is State.CONNECTING
    assert ch.tick(1000.0) == [] and ch.deadline() is None


def test_decider_retries_after_the_channel_is_lost() -> None:
    ch = up_channel(HIGH, LOW)
    assert ch.child_down("1", "c1", 10.0) == [Deactivate("CHILD SA closed")]
    assert ch.tick(15.0) == []
    assert ch.tick(20.0) == [Initiate()]


def test_initiator_failures_back_off_exponentially_to_600s() -> None:
    ch = PeerChannel(HIGH)
    now = 0.0
    assert ch.adjacency_up(now) == [Initiate()]
    delays = []
    for _ in range(9):
        assert ch.initiate_failed(now, "timeout") == []
        assert ch.last_error == "timeout"
        due = ch.deadline()
        assert due is not None
        delays.append(due - now)
        assert ch.tick(due - 0.1) == []
        now = due
        assert ch.tick(now) == [Initiate()]
    assert delays == [10, 20, 40, 80, 160, 320, 600, 600, 600]


def test_responder_rejection_does_not_throttle_own_attempts() -> None:
    ch = PeerChannel(HIGH)
    ch.adjacency_up(0.0)
    ch.initiate_succeeded()   # say our attempt is still going on elsewhere
    ch.pending = False
    ch.sa_seen("5", False, "x")
    assert ch.peer_rejected("5", "other domain", 1.0) == [Terminate("5", "other domain")]
    assert ch.last_error == "other domain" and ch.failures == 0 and ch.backoff == 10


def test_rejected_initiator_sa_backs_off_and_gets_no_interface() -> None:
    ch = PeerChannel(HIGH)
    ch.adjacency_up(0.0)
    ch.sa_seen("1", True, "x")
    ch.child_up("1", "c1", True, "x")
    assert ch.peer_rejected("1", "expired", 1.0) == [Terminate("1", "expired")]
    assert ch.state is State.CONNECTING and not ch.active
    assert ch.deadline() == 11.0
    assert ch.sa_down("1", 2.0) == []


def test_failure_of_a_duplicate_does_not_count() -> None:
    ch = up_channel(LOW, HIGH)
    assert ch.initiate_failed(5.0, "deleted by the Decider") == []
    assert ch.failures == 0 and ch.last_error is None


def test_adjacency_down_removes_everything_and_resets() -> None:
    ch = up_channel(HIGH, LOW)
    ch.sa_seen("2", False, "peer")
    assert ch.adjacency_down(5.0) == [Remove(("1", "2"))]
    assert ch.state is State.IDLE and ch.role is Role.UNKNOWN and not ch.sas
    assert ch.sa_down("1", 6.0) == [] and ch.tick(100.0) == []
    assert ch.adjacency_up(7.0) == [Initiate()]


def test_adopted_channel_waits_for_its_adjacency() -> None:
    ch = PeerChannel(HIGH)
    ch.adopt(0.0, grace=150.0)
    assert ch.tick(100.0) == []
    assert ch.next_timer() == 150.0
    assert ch.adjacency_up(101.0) == [Initiate()]
    assert ch.adopted_until is None and ch.next_timer() is None   # its attempt is in flight


def test_adopted_channel_not_heard_within_the_grace_is_removed() -> None:
    ch = PeerChannel(HIGH)
    ch.adopt(10.0, grace=150.0)
    ch.sa_seen("7", True, "peer")
    assert ch.next_timer() == 160.0
    assert ch.handle_timer(159.0) == []                # early: nothing due
    assert ch.handle_timer(160.0) == [Remove(("7",), GRACE_OVER)]
    assert ch.state is State.IDLE and ch.next_timer() is None


def test_next_timer_is_the_next_attempt_only_when_one_may_start() -> None:
    ch = PeerChannel(HIGH)
    assert ch.next_timer() is None
    assert ch.adjacency_up(0.0) == [Initiate()]
    ch.sa_seen("1", True, "x")
    ch.child_up("1", "c1", True, "x")
    assert ch.peer_rejected("1", "expired", 1.0) == [Terminate("1", "expired")]
    assert ch.deadline() == 11.0 and ch.next_timer() is None  # our attempt still in flight
    ch.initiate_succeeded()
    assert ch.next_timer() == 11.0
    assert ch.handle_timer(10.0) == [] and ch.handle_timer(11.0) == [Initiate()]
    assert ch.next_timer() is None


def test_adopted_channel_with_an_sa_does_not_initiate() -> None:
    ch = PeerChannel(HIGH)
    ch.adopt(0.0, grace=150.0)
    ch.sa_seen("7", True, "peer")
    ch.child_up("7", "c7", True, "peer")
    assert ch.adjacency_up(1.0) == []
    assert ch.peer_verified("7", LOW, "n", 2.0) == [Activate(LOW, "n")]


def test_rekeys_keep_the_channel() -> None:
    ch = up_channel(HIGH, LOW)
    ch.ike_rekeyed("1", "9")
    ch.child_rekeyed("9", "c1", "c9")
    assert ch.child_down("9", "c1", 1.0) == []
    assert ch.child_down("9", "c9", 2.0) == [Deactivate("CHILD SA closed")]


def test_loss_while_the_other_sa_is_still_being_checked_keeps_the_channel() -> None:
    ch = up_channel(LOW, HIGH)
    ch.child_up("2", "c2", False, "peer")          # SA 2 seen, its check still running
    assert ch.sa_down("1", 2.0) == []              # the Decider deleted SA 1
    assert ch.peer_verified("2", HIGH, "peer-name", 2.5) == []
    assert ch.state is State.UP and ch.active


def test_refusal_of_the_last_candidate_takes_the_channel_down() -> None:
    ch = up_channel(LOW, HIGH)
    ch.child_up("2", "c2", False, "x")
    ch.sa_down("1", 2.0)
    assert ch.peer_rejected("2", "expired", 3.0) == [Terminate("2", "expired"),
                                                     Deactivate("expired")]


def test_charon_restart_makes_even_the_follower_initiate_at_once() -> None:
    """The peer keeps its old SAs until DPD gives up (minutes with strongSwan's defaults):
    only our INITIAL_CONTACT tells it sooner, so both roles initiate, without back-off."""
    for mine, peer in ((LOW, HIGH), (HIGH, LOW)):
        ch = up_channel(mine, peer)
        ch.child_down("1", "c1", 5.0)          # a lost channel leaves a back-off pending
        ch.sa_seen("2", True, "peer")
        ch.child_up("2", "c2", True, "peer")
        ch.peer_verified("2", peer, "peer-name", 6.0)
        assert ch.state is State.UP
        assert ch.charon_restarted(7.0) == [Deactivate("charon restarted"), Initiate()]
        assert ch.role is Role.UNKNOWN and not ch.sas and ch.failures == 0
        assert ch.backoff == ch.initial_retry
        assert ch.peer_ike_id == "peer"   # named in the INITIAL_CONTACT initiation


def test_charon_restart_leaves_an_idle_channel_alone() -> None:
    assert PeerChannel(HIGH).charon_restarted(1.0) == []


def test_jitter_spreads_candidates_that_failed_together() -> None:
    due = []
    for seed in range(20):
        ch = PeerChannel(HIGH, rng=random.Random(seed))
        ch.adjacency_up(0.0)
        ch.initiate_failed(0.0, "peer not answering", answered=False)
        assert ch.deadline() is not None
        due.append(ch.deadline())
    assert all(8.0 <= d <= 12.0 for d in due) and len(set(due)) > 10


def test_an_unanswered_attempt_releases_what_it_prepared() -> None:
    ch = PeerChannel(HIGH)
    assert ch.adjacency_up(0.0) == [Initiate()]
    assert ch.initiate_failed(5.0, "peer not answering", answered=False) == [Release()]
    assert ch.last_error == "peer not answering" and ch.failures == 1
    assert ch.tick(15.0) == [Initiate()]
    # a refusal is an answer: the peer is there, keep what is loaded for its next try
    assert ch.initiate_failed(16.0, "no proposal chosen", answered=True) == []


def test_a_neighbour_verified_once_keeps_its_connection() -> None:
    ch = up_channel(HIGH, LOW)
    ch.child_down("1", "c1", 10.0)
    ch.sa_down("1", 10.0)
    assert ch.tick(20.0) == [Initiate()]
    assert ch.initiate_failed(25.0, "peer not answering", answered=False) == []


def test_a_knock_skips_the_back_off_and_the_line() -> None:
    ch = PeerChannel(HIGH)
    ch.adjacency_up(0.0)
    for n in range(5):
        ch.initiate_failed(float(n), "peer not answering", answered=False)
        ch.pending = False
    assert ch.deadline() is not None and ch.deadline() > 100
    assert ch.knocked(7.0) == [Initiate(urgent=True)]
    assert ch.knocked(7.5) == []           # already on its way
    assert up_channel(HIGH, LOW).knocked(1.0) == []
    assert PeerChannel(HIGH).knocked(1.0) == []


def test_a_queued_attempt_is_not_wanted_once_the_channel_is_up() -> None:
    ch = PeerChannel(LOW)
    assert ch.adjacency_up(0.0) == [Initiate()]
    assert ch.wants_attempt()
    ch.sa_seen("1", False, "peer")
    ch.child_up("1", "c1", False, "peer")
    ch.peer_verified("1", HIGH, "peer-name", 1.0)
    assert not ch.wants_attempt()
    ch.attempt_dropped()
    assert not ch.pending

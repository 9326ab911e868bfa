"""Bounded channel work, sans-I/O: initiation slots per link and per node, the turn order
across links, parking of candidates past the caps and the choice of whom to park."""
from __future__ import annotations

from acp_openwrt.channels.attempts import Candidate, InitiationSlots, Parking, victim


def keys(link: str, n: int) -> list[tuple[str, str]]:
    return [(link, f"fe80::{link}:{i}") for i in range(n)]


def test_caps_per_link_and_per_node() -> None:
    slots = InitiationSlots(per_interface=2, per_node=3)
    for key in keys("a", 5) + keys("b", 5):
        slots.request(key)
    started = slots.take()
    assert len(started) == 3
    assert sum(1 for k in started if k[0] == "a") <= 2
    assert sum(1 for k in started if k[0] == "b") <= 2
    assert slots.take() == []                       # nothing frees, nothing starts
    slots.release(started[0])
    (next_one,) = slots.take()
    assert next_one not in started


def test_a_flooded_link_never_starves_another() -> None:
    """1000 fakes wait on eth0; the one neighbour on eth1 asks last and still starts at once."""
    slots = InitiationSlots(per_interface=2, per_node=4)
    for key in keys("eth0", 1000):
        slots.request(key)
    first = slots.take()
    assert len(first) == 2 and {k[0] for k in first} == {"eth0"}
    real = ("eth1", "fe80::real")
    slots.request(real)
    assert slots.take() == [real]


def test_links_take_turns_as_slots_free() -> None:
    slots = InitiationSlots(per_interface=1, per_node=1)
    for key in keys("a", 3) + keys("b", 3) + keys("c", 3):
        slots.request(key)
    order = []
    for _ in range(9):
        (key,) = slots.take()
        order.append(key[0])
        slots.release(key)
    assert order == ["a", "b", "c"] * 3


def test_within_a_link_first_come_first_served_and_a_knock_jumps_the_line() -> None:
    slots = InitiationSlots(per_interface=1, per_node=4)
    waiting = keys("a", 4)
    for key in waiting:
        slots.request(key)
    slots.request(waiting[3], urgent=True)
    got = []
    for _ in range(4):
        (key,) = slots.take()
        got.append(key)
        slots.release(key)
    assert got == [waiting[3], waiting[0], waiting[1], waiting[2]]


def test_requests_are_idempotent_and_cancellable() -> None:
    slots = InitiationSlots(per_interface=2, per_node=2)
    a, b, c = keys("a", 3)
    slots.request(a)
    slots.request(a)
    slots.request(b)
    slots.cancel(b)
    assert not slots.waiting(b)
    assert slots.take() == [a]
    assert slots.in_flight(a)
    slots.request(a)                 # in flight: not started twice, but again once it ends
    assert slots.take() == []
    slots.release(a)
    slots.release(a)                 # twice is harmless
    assert slots.waiting(a)
    slots.request(c)
    assert slots.take() == [a, c]
    assert slots.status()["started"] == 3 and slots.status()["waiting"] == 0


def test_parking_is_bounded_first_come_first_served_and_keeps_who_waits() -> None:
    parking = Parking(size=3)
    assert [parking.park(key) for key in keys("a", 5)] == [True, True, True, False, False]
    assert len(parking) == 3 and parking.dropped == 2
    assert parking.next_for() == ("a", "fe80::a:0")
    assert parking.remove(("a", "fe80::a:1")) and not parking.remove(("a", "fe80::a:1"))
    assert parking.next_for(node_room=False) is None
    parking.park(("b", "fe80::b:0"))
    assert parking.next_for({"a": False}) == ("b", "fe80::b:0")
    assert parking.with_peer("fe80::a:2") == [("a", "fe80::a:2")]
    parking.drop_interface("a")
    assert len(parking) == 0


def test_the_candidate_that_failed_most_is_parked_never_a_fresh_or_busy_one() -> None:
    def cand(name: str, failures: int, due: float | None = 10.0,
             evictable: bool = True) -> Candidate:
        return Candidate(("eth0", name), evictable, failures, due)
    assert victim([cand("new", 0), cand("fresh", 0)]) is None
    assert victim([cand("busy", 9, evictable=False), cand("once", 1)]) == ("eth0", "once")
    assert victim([cand("x", 3, 50.0), cand("y", 3, 90.0), cand("z", 2)]) == ("eth0", "y")


def test_a_knock_gets_one_slot_beyond_the_caps() -> None:
    slots = InitiationSlots(per_interface=2, per_node=2)
    for key in keys("eth0", 10):
        slots.request(key)
    assert len(slots.take()) == 2                   # both slots held by (say) silent fakes
    real = ("eth0", "fe80::real")
    slots.request(real, urgent=True)
    assert slots.take() == [real]
    other = ("eth0", "fe80::other")
    slots.request(other, urgent=True)
    assert slots.take() == []                       # one extra, not one per knock
    slots.release(real)
    assert slots.take() == [other]


def test_a_knocking_newcomer_displaces_an_untried_candidate() -> None:
    fresh = [Candidate(("eth0", f"fe80::{n}"), True, 0, 0.0) for n in range(3)]
    assert victim(fresh) is None
    assert victim(fresh, for_knock=True) == ("eth0", "fe80::2")
    assert victim([Candidate(("eth0", "x"), False, 0, 0.0)], for_knock=True) is None


def test_knocks_are_served_in_their_order() -> None:
    slots = InitiationSlots(per_interface=0, per_node=0)    # only knocks get a slot
    a, b, c = keys("eth0", 3)
    slots.request(c)
    slots.request(a, urgent=True)
    slots.request(b, urgent=True)
    assert slots.take() == [a]
    slots.release(a)
    assert slots.take() == [b]


def test_asked_for_while_in_flight_it_is_queued_when_the_slot_frees() -> None:
    """A knock while the failed attempt still cleans up (unloading in charon) asks for an
    attempt of a key still in flight; dropping that request left the channel pending for an
    attempt that never came (seen in the vm tier: a channel stuck for minutes)."""
    slots = InitiationSlots(per_interface=1, per_node=1)
    key, other = ("eth0", "fe80::1"), ("eth0", "fe80::2")
    slots.request(key)
    assert slots.take() == [key]
    slots.request(other)
    slots.request(key, urgent=True)        # the knock, during the attempt's tail
    assert not slots.waiting(key)
    slots.release(key)
    assert slots.waiting(key)
    assert slots.take() == [key]           # urgent: ahead of the one that waited
    slots.release(key)
    assert slots.take() == [other]


def test_a_cancelled_key_is_not_queued_again() -> None:
    slots = InitiationSlots(per_interface=1, per_node=1)
    key = ("eth0", "fe80::1")
    slots.request(key)
    slots.take()
    slots.request(key)
    slots.cancel(key)                      # came up as responder meanwhile
    slots.release(key)
    assert slots.take() == []

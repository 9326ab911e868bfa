"""The liveness probe (discovery/liveness.py) and what it changes in the adjacency table."""
from __future__ import annotations

import struct

import pytest

from acp_openwrt.discovery.adjacency import BY_ANSWER, AdjacencyTable, Limits
from acp_openwrt.discovery.echo import ECHO_REPLY, echo_request, parse_reply, reply_filter
from acp_openwrt.discovery.liveness import Alive, LivenessProbe, Offer, Probe
from acp_openwrt.events import AdjacencyUp

pytestmark = pytest.mark.unit
OFFER = Offer(("IKEv2",), 500, 210_000)


def test_one_probe_per_gap_per_link_however_many_newcomers() -> None:
    probe = LivenessProbe(min_gap_s=1.0)
    assert probe.heard("eth0", "fe80::1", OFFER, now=10.0) == [Probe("eth0")]
    for n in range(2, 1000):
        assert probe.heard("eth0", f"fe80::{n:x}", OFFER, now=10.0 + n / 10_000) == []
    assert probe.heard("eth1", "fe80::1", OFFER, now=10.05) == [Probe("eth1")]  # own budget
    assert probe.next_timer() == 11.0   # the owed probe of eth0
    assert probe.handle_timer(10.9) == []
    assert probe.handle_timer(11.0) == [Probe("eth0")]
    assert probe.next_timer() is None
    assert probe.counters["probes"] == 3


def test_an_answer_from_a_recent_source_is_alive_once() -> None:
    probe = LivenessProbe()
    probe.heard("eth0", "fe80::d", OFFER, now=0.0)
    assert probe.answered("eth0", "fe80::d", now=0.01) == [Alive("fe80::d", "eth0", OFFER)]
    assert probe.answered("eth0", "fe80::d", now=0.02) == []
    assert probe.answered("eth1", "fe80::d", now=0.02) == []   # no probe left on eth1


def test_an_answerer_is_alive_when_its_flood_comes_later() -> None:
    """Under a flood the real neighbour's AN_ACP is pushed out of the recent sources by
    thousands of fakes before the answer comes; its answer is remembered instead."""
    probe = LivenessProbe(recent=16)
    probe.heard("eth0", "fe80::d", OFFER, now=0.0)
    for n in range(100):
        probe.heard("eth0", f"fe80::a:{n:x}", OFFER, now=0.001)
    assert probe.answered("eth0", "fe80::d", now=0.01) == []
    assert probe.heard("eth0", "fe80::d", OFFER, now=1.0) == [Alive("fe80::d", "eth0", OFFER)]
    assert probe.status()["remembered"] <= 16


def test_answers_without_a_probe_or_too_old_count_for_nothing() -> None:
    probe = LivenessProbe(answer_window_s=5.0, answer_memory_s=30.0)
    assert probe.answered("eth0", "fe80::d", now=0.0) == []
    assert probe.counters["answers_unsolicited"] == 1
    probe.heard("eth0", "fe80::b", OFFER, now=0.0)            # a probe leaves
    assert probe.answered("eth0", "fe80::d", now=1.0) == []   # remembered, no AN_ACP yet
    assert probe.heard("eth0", "fe80::d", OFFER, now=40.0) == [Probe("eth0")]  # too late
    assert probe.answered("eth0", "fe80::b", now=46.0) == []  # outside the probe's window


def test_memory_is_bounded_per_link() -> None:
    probe = LivenessProbe(recent=8, answerers=4)
    probe.heard("eth0", "fe80::1", OFFER, now=0.0)
    for n in range(10_000):
        probe.heard("eth0", f"fe80::a:{n:x}", OFFER, now=0.5)
        probe.answered("eth0", f"fe80::b:{n:x}", now=0.5)
    status = probe.status()
    assert status["remembered"] == 8 and status["answerers"] == 4
    probe.forget("eth0")
    assert probe.status()["remembered"] == 0 and probe.next_timer() is None


def test_the_table_confirms_answerers_up_to_a_quota_per_link() -> None:
    table = AdjacencyTable(Limits(max_answered=2))
    for n in range(4):
        assert isinstance(table.heard(f"fe80::{n}", "eth0", ("IKEv2",), 500, 0, now=0.0)[0],
                          AdjacencyUp)
    assert table.confirm("fe80::0", "eth0", BY_ANSWER) is not None
    assert table.confirm("fe80::1", "eth0", BY_ANSWER) is not None
    assert table.confirm("fe80::2", "eth0", BY_ANSWER) is None
    assert table.counters["answered_refused"] == 1
    assert table.confirmed_count()[BY_ANSWER] == 2
    table.expire(now=1e6)       # gone: the quota is free again
    table.heard("fe80::2", "eth0", ("IKEv2",), 500, 0, now=1e6)
    assert table.confirm("fe80::2", "eth0", BY_ANSWER) is not None


def test_an_answered_entry_is_never_evicted_by_newcomers() -> None:
    table = AdjacencyTable(Limits(per_interface=4))
    table.heard("fe80::d", "eth0", ("IKEv2",), 500, 0, now=0.0)
    table.confirm("fe80::d", "eth0", BY_ANSWER)
    for n in range(100):
        table.heard(f"fe80::a:{n:x}", "eth0", ("IKEv2",), 500, 0, now=1.0)
    assert ("fe80::d", "eth0") in table.entries


def test_echo_packets() -> None:
    request = echo_request(0x1234, 7)
    assert struct.unpack_from("!BBHHH", request) == (128, 0, 0, 0x1234, 7)
    assert parse_reply(bytes([ECHO_REPLY, 0, 0, 0]) + request[4:], 0x1234)
    assert not parse_reply(bytes([ECHO_REPLY, 0, 0, 0]) + request[4:], 0x4321)
    assert not parse_reply(request, 0x1234) and not parse_reply(b"\x81", 0x1234)
    words = struct.unpack("=8I", reply_filter())
    passes = [t for t in range(256) if not words[t >> 5] & (1 << (t & 31))]
    assert passes == [ECHO_REPLY]

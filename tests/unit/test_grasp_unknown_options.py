"""RFC 8990 §2.8.2: options not consistent with the message type (unknown ones, or known ones in
the wrong message) are silently discarded and the rest of the message is processed; malformed
options we do know still refuse the message. Both decoder paths (cbor2's fast path and the
careful cbor_reader path) must agree, and the engine counts what it skipped."""
from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import CloseStream, FloodReceived, SendStream
from acp_openwrt.grasp.codec import (
    GraspDecodeError,
    _decode_careful,
    decode,
    decode_counted,
    encode,
    validate,
)
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.messages import (
    Discovery,
    End,
    Flood,
    Invalid,
    Locator,
    Negotiate,
    Objective,
    RequestNegotiation,
    RequestSynchronization,
    Response,
    Synch,
    TaggedObjective,
    Wait,
)

INIT = bytes.fromhex("20010db8f000baaa28ccdc4c97036781")
LL = bytes.fromhex("fe80000000000000c0011001feef0000")
OBJ = ["EX1", 4, 1, ["value", 1]]
LOC = [c.O_IPv6_LOCATOR, INIT, c.IPPROTO_TCP, 7017]
UNKNOWN = [200, "future", {"a": 1}]   # an option type nobody has defined yet
LOCATOR_LIKE = [107, INIT, 6, 80]      # a locator type from the future


def _careful_bytes(item: list[Any]) -> bytes:
    """The same message, not canonical (session id in an 8-byte head): only the careful path
    accepts it."""
    data = cbor2.dumps(item)
    prefix = data[:1] + cbor2.dumps(item[0])  # the array head and the message type
    sid = cbor2.dumps(item[1])
    assert data.startswith(prefix + sid)
    return prefix + b"\x1b" + item[1].to_bytes(8, "big") + data[len(prefix) + len(sid):]


def _both_paths(item: list[Any]) -> tuple[Any, int]:
    """Decode `item` on the fast path and on the careful path; both must give the same."""
    data = cbor2.dumps(item)
    msg, skipped = decode_counted(data)
    assert validate(cbor2.loads(data), True)[1] == len(data)  # the fast path vouches for it
    assert _decode_careful(data) == msg
    slow, slow_skipped = decode_counted(_careful_bytes(item))
    assert (slow, slow_skipped) == (msg, skipped)
    assert decode(data) == msg
    return msg, skipped


# (message as the CBOR data model, the same message without the options we must skip, skipped)
CASES: dict[str, tuple[list[Any], list[Any], int]] = {
    "discovery, option after the objective": (
        [1, 5, INIT, OBJ, UNKNOWN], [1, 5, INIT, OBJ], 1),
    "discovery, option before the objective": (
        [1, 5, INIT, UNKNOWN, OBJ], [1, 5, INIT, OBJ], 1),
    "discovery, a locator is not consistent with M_DISCOVERY": (
        [1, 5, INIT, OBJ, LOC], [1, 5, INIT, OBJ], 1),
    "req_neg, two options": (
        [3, 5, [201], OBJ, UNKNOWN], [3, 5, OBJ], 2),
    "req_syn, O_ACCEPT is not consistent with it": (
        [4, 5, OBJ, [c.O_ACCEPT]], [4, 5, OBJ], 1),
    "negotiate": ([5, 5, OBJ, UNKNOWN], [5, 5, OBJ], 1),
    "synch": ([8, 5, UNKNOWN, OBJ], [8, 5, OBJ], 1),
    "end accept, option after": ([6, 5, [c.O_ACCEPT], UNKNOWN], [6, 5, [c.O_ACCEPT]], 1),
    "end decline, option before": (
        [6, 5, UNKNOWN, [c.O_DECLINE, "no"]], [6, 5, [c.O_DECLINE, "no"]], 1),
    "end, O_DIVERT is not consistent with M_END": (
        [6, 5, [c.O_DIVERT, LOC], [c.O_ACCEPT]], [6, 5, [c.O_ACCEPT]], 1),
    "wait": ([7, 5, 1000, UNKNOWN], [7, 5, 1000], 1),
    "invalid with content": ([99, 5, "why", UNKNOWN], [99, 5, "why"], 1),
    "response, between locators": (
        [2, 5, INIT, 60000, LOC, UNKNOWN, LOC[:3] + [7018]],
        [2, 5, INIT, 60000, LOC, LOC[:3] + [7018]], 1),
    "response, after the objective": (
        [2, 5, INIT, 60000, LOC, OBJ, UNKNOWN], [2, 5, INIT, 60000, LOC, OBJ], 1),
    "response, a locator type from the future": (
        [2, 5, INIT, 60000, LOCATOR_LIKE, LOC], [2, 5, INIT, 60000, LOC], 1),
    "response, inside O_DIVERT": (
        [2, 5, INIT, 60000, [c.O_DIVERT, LOC, UNKNOWN]], [2, 5, INIT, 60000, [c.O_DIVERT, LOC]], 1),
    "response, O_ACCEPT is not consistent with it": (
        [2, 5, INIT, 60000, [c.O_ACCEPT], LOC], [2, 5, INIT, 60000, LOC], 1),
    "flood, option between pairs": (
        [9, 5, INIT, 60000, [OBJ, LOC], UNKNOWN, [["EX2", 4, 1], []]],
        [9, 5, INIT, 60000, [OBJ, LOC], [["EX2", 4, 1], []]], 1),
    "flood, a two-element option looks like a pair": (
        [9, 5, INIT, 60000, [202, "x"], [OBJ, []]], [9, 5, INIT, 60000, [OBJ, []]], 1),
    "flood, a pair whose locator type is from the future goes with it": (
        [9, 5, INIT, 60000, [OBJ, LOCATOR_LIKE], [["EX2", 4, 1], LOC]],
        [9, 5, INIT, 60000, [["EX2", 4, 1], LOC]], 1),
    "flood, option type beyond 255": (
        [9, 5, INIT, 60000, [OBJ, []], [70000, -3, [True, None]]],
        [9, 5, INIT, 60000, [OBJ, []]], 1),
}


@pytest.mark.parametrize("name", CASES)
def test_options_not_consistent_with_the_type_are_skipped(name: str) -> None:
    with_options, without, skipped = CASES[name]
    msg, count = _both_paths(with_options)
    assert count == skipped
    expected, none = decode_counted(cbor2.dumps(without))
    assert msg == expected and none == 0
    assert encode(msg) == cbor2.dumps(without)  # what we relay or echo carries only what we know


def test_floats_in_a_skipped_option_are_left_to_the_careful_path() -> None:
    data = cbor2.dumps([9, 5, INIT, 60000, [OBJ, []], [203, 1.5]])
    with pytest.raises(Exception) as info:  # the fast path's validation cannot vouch for a float
        validate(cbor2.loads(data), True)
    assert type(info.value).__name__ == "_NotCanonical"
    assert decode_counted(data) == (decode(cbor2.dumps([9, 5, INIT, 60000, [OBJ, []]])), 1)


def test_tags_in_a_skipped_option_are_left_to_the_careful_path() -> None:
    # cbor2 would turn a bignum tag into an int: the fast path must not vouch for the size
    data = bytes.fromhex("85 09 05 50") + INIT + bytes.fromhex("19ea60") + cbor2.dumps([OBJ, []])
    data = bytes([0x86]) + data[1:] + bytes.fromhex("82 18c8 c2 41 05")
    msg, skipped = decode_counted(data)
    assert skipped == 1 and msg == decode(cbor2.dumps([9, 5, INIT, 60000, [OBJ, []]]))


REFUSED: dict[str, tuple[list[Any], str]] = {
    "flood, malformed known locator beside an unknown option": (
        [9, 5, INIT, 60000, UNKNOWN, [OBJ, [c.O_IPv6_LOCATOR, bytes(4), 6, 80]]], "16 bytes"),
    "flood, nothing but unknown options": ([9, 5, INIT, 60000, UNKNOWN], "objective"),
    "flood, only a pair with a future locator": (
        [9, 5, INIT, 60000, [OBJ, LOCATOR_LIKE]], "objective"),
    "response, only unknown options": ([2, 5, INIT, 60000, UNKNOWN], "without a locator"),
    "response, malformed known locator": (
        [2, 5, INIT, 60000, UNKNOWN, [c.O_IPv6_LOCATOR, INIT, 41, 80]], "protocol"),
    "response, divert and locators": (
        [2, 5, INIT, 60000, [c.O_DIVERT, LOC], UNKNOWN, LOC], "only option"),
    "response, divert with only unknown options": (
        [2, 5, INIT, 60000, [c.O_DIVERT, UNKNOWN]], "O_DIVERT without"),
    "end, accept and decline": ([6, 5, [c.O_ACCEPT], [c.O_DECLINE]], "M_END"),
    "end, malformed accept beside an unknown option": (
        [6, 5, UNKNOWN, [c.O_ACCEPT, 1]], "O_ACCEPT"),
    "end, only unknown options": ([6, 5, UNKNOWN], "O_ACCEPT or O_DECLINE"),
    "discovery, two objectives": ([1, 5, INIT, OBJ, UNKNOWN, OBJ], "M_DISCOVERY"),
    "discovery, objective missing": ([1, 5, INIT, UNKNOWN], "objective"),
    "req_neg, malformed objective beside an option": ([3, 5, UNKNOWN, ["EX1", 99, 1]], "flags"),
    "not an option: a bare integer": ([4, 5, OBJ, 7], "M_REQ_SYN"),
    "not an option: empty array": ([4, 5, OBJ, []], "M_REQ_SYN"),
    "not an option: array starting with text": ([7, 5, 1000, ["x", 1]], "M_WAIT"),
    "not an option: negative option type": ([7, 5, 1000, [-1]], "M_WAIT"),
    "not an option: boolean option type": ([7, 5, 1000, [True]], "M_WAIT"),
    "noop carries nothing": ([0, UNKNOWN], "M_NOOP"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_malformed_known_options_and_non_options_still_refuse(name: str) -> None:
    item, reason = REFUSED[name]
    for data in (cbor2.dumps(item), *((_careful_bytes(item),) if item[0] != c.M_NOOP else ())):
        with pytest.raises(GraspDecodeError) as info:
            decode(data)
        assert reason in str(info.value)


def test_fuzzed_options_decode_the_same_on_both_paths() -> None:
    rng = random.Random(82)
    leaves: list[Any] = [0, 23, 24, 255, 65536, 2**32, -1, "x", b"\x00", [], {}, None, True]
    for _ in range(3000):
        extras = [[rng.choice([150, 200, 255, 1000, 2**40])] + rng.sample(leaves, rng.randrange(4))
                  for _ in range(rng.randrange(1, 4))]
        base = rng.choice([[4, 9, OBJ], [6, 9, [c.O_ACCEPT]], [9, 9, INIT, 1000, [OBJ, LOC]],
                           [2, 9, INIT, 1000, LOC], [7, 9, 5]])
        item = list(base)
        for extra in extras:
            item.insert(rng.randrange(3 if base[0] in (4, 6, 7) else 5, len(item) + 1), extra)
        msg, skipped = _both_paths(item)
        assert skipped == len(extras) and msg == decode(cbor2.dumps(base))


# -- the engine ------------------------------------------------------------------------------

def _acp_engine() -> Engine:
    engine = Engine(EngineConfig(address=bytes.fromhex("fd00" + "00" * 13 + "02")),
                    random.Random(1))
    engine.add_interface("eth0", LL)
    return engine


def test_dull_flood_with_an_unknown_option_is_taken_and_counted() -> None:
    engine = Engine(EngineConfig(dull=True), random.Random(1))
    engine.add_interface("eth0", LL)
    peer = bytes.fromhex("fe80000000000000000000000000beef")
    an_acp = [["AN_ACP", 4, 1, "IKEv2"], [c.O_IPv6_LOCATOR, peer, 17, 500]]
    out = engine.receive_datagram("eth0", peer, cbor2.dumps([9, 77, peer, 60000, an_acp, UNKNOWN]),
                                  0.0)
    (received,) = [o for o in out if isinstance(o, FloodReceived)]
    assert received.objective.name == "AN_ACP" and received.locator.port == 500
    assert engine.counters == {"flood_accepted": 1, "unknown_option_skipped": 1}


def test_stream_message_with_an_unknown_option_is_answered_and_the_connection_kept() -> None:
    engine = _acp_engine()
    value = Objective("EX2", c.F_SYNCH, 5, ["v", 2])
    engine.listen_synchronize(value)
    conn, _ = engine.stream_accepted(bytes.fromhex("fd00" + "00" * 13 + "01"), None, 0.0)
    out = engine.receive_stream_message(conn, cbor2.dumps([4, 42, UNKNOWN, ["EX2", 4, 5]]), 0.0)
    sent = [decode(o.data) for o in out if isinstance(o, SendStream)]
    assert sent == [Synch(42, value)]
    assert engine.counters == {"synchronization_answered": 1, "unknown_option_skipped": 1}
    # a negotiation session survives a step carrying an unknown option
    engine.listen_negotiate(Objective("EX3", c.F_NEG, 6, 0))
    conn2, _ = engine.stream_accepted(bytes.fromhex("fd00" + "00" * 13 + "01"), None, 0.0)
    request = RequestNegotiation(43, Objective("EX3", c.F_NEG, 6, 1))
    engine.receive_stream_message(conn2, encode(request), 0.0)
    out = engine.receive_stream_message(conn2, cbor2.dumps([6, 43, [c.O_ACCEPT], UNKNOWN]), 0.1)
    assert any(type(o).__name__ == "NegotiationEnded" and o.accept for o in out)
    assert engine.counters["unknown_option_skipped"] == 2 and "decode_error" not in engine.counters


def test_malformed_known_option_on_a_stream_drops_it_counted() -> None:
    engine = _acp_engine()
    engine.listen_synchronize(Objective("EX2", c.F_SYNCH, 5, 1))
    conn, _ = engine.stream_accepted(bytes.fromhex("fd00" + "00" * 13 + "01"), None, 0.0)
    out = engine.receive_stream_message(conn, cbor2.dumps([6, 42, UNKNOWN, [c.O_DECLINE, 5]]), 0.0)
    assert CloseStream(conn) in out
    assert engine.counters == {"decode_error": 1}


def test_constructed_messages_carry_no_options() -> None:
    # the encoder never invents options: every message type round-trips without skips
    loc = Locator(c.O_IPv6_LOCATOR, INIT, c.IPPROTO_TCP, 7017)
    obj = Objective("EX1", 4, 1, 0)
    for msg in (Discovery(1, INIT, obj), Response(1, INIT, 5, (loc,)), Negotiate(1, obj),
                RequestSynchronization(1, obj), End(1, False, "x"), Wait(1, 5), Invalid(1),
                Flood(1, INIT, 5, (TaggedObjective(obj, loc),))):
        assert decode_counted(encode(msg)) == (msg, 0)

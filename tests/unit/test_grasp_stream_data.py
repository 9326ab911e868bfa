"""Engine.receive_stream_data: bytes as read from a TCP connection, framed by the engine (one
read = one message, decoded once; a message split over reads; several in one read; garbage)."""
from __future__ import annotations

import random

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.actions import CloseStream, NegotiationRequested
from acp_openwrt.grasp.codec import encode
from acp_openwrt.grasp.engine import Engine, EngineConfig
from acp_openwrt.grasp.messages import Noop, Objective, RequestNegotiation

PEER = bytes.fromhex("fd000000000000000000000000000001")
OBJ = Objective("EX3", c.F_NEG, 6, ["NZD", 410])
REQUEST = encode(RequestNegotiation(42, OBJ))


def _listening() -> tuple[Engine, int]:
    engine = Engine(EngineConfig(address=bytes.fromhex("fd00" + "00" * 13 + "02")),
                    random.Random(1))
    engine.listen_negotiate(OBJ)
    conn, out = engine.stream_accepted(PEER, None, 0.0)
    assert out == []
    return engine, conn


def _requested(outputs: list[object]) -> list[NegotiationRequested]:
    return [o for o in outputs if type(o) is NegotiationRequested]


def test_one_read_one_message() -> None:
    engine, conn = _listening()
    (event,) = _requested(engine.receive_stream_data(conn, REQUEST, 0.0))
    assert event.objective == OBJ and event.peer == PEER
    assert engine.streams[conn].framer is None  # the fast path made no framer


def test_a_message_split_over_reads() -> None:
    engine, conn = _listening()
    assert engine.receive_stream_data(conn, REQUEST[:5], 0.0) == []
    assert engine.receive_stream_data(conn, REQUEST[5:9], 0.0) == []
    (event,) = _requested(engine.receive_stream_data(conn, REQUEST[9:], 0.0))
    assert event.objective == OBJ


def test_several_messages_in_one_read() -> None:
    engine, conn = _listening()
    noop = encode(Noop())
    out = engine.receive_stream_data(conn, noop + REQUEST, 0.0)
    assert len(_requested(out)) == 1 and engine.counters["noop"] == 1
    # a whole message then the start of the next: the rest completes it
    engine2, conn2 = _listening()
    assert _requested(engine2.receive_stream_data(conn2, noop + REQUEST[:7], 0.0)) == []
    assert len(_requested(engine2.receive_stream_data(conn2, REQUEST[7:], 0.0))) == 1


def test_garbage_closes_the_stream() -> None:
    engine, conn = _listening()
    out = engine.receive_stream_data(conn, b"\x1c\x00\x00", 0.0)
    assert CloseStream(conn) in out
    assert engine.counters["stream_framing_error"] == 1
    assert engine.receive_stream_data(conn, REQUEST, 0.0) == []  # gone
    assert engine.counters["unknown_stream"] == 1


def test_a_whole_message_that_is_not_grasp_closes_the_stream() -> None:
    engine, conn = _listening()
    out = engine.receive_stream_data(conn, b"\x82\x01\x02", 0.0)  # [1, 2]: CBOR, not GRASP
    assert CloseStream(conn) in out and engine.counters["decode_error"] == 1

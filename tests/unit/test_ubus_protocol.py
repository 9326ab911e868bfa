"""The ubus wire protocol core and the blobmsg codec, against bytes captured from OpenWrt's
ubusd (ubus 3cc98db1a422, libubox 1aa36ee774c8, built from ../shared/openwrt-userland) and
the `ubus` CLI, and against malformed input (never anything but BlobError/UbusProtocolError)."""
from __future__ import annotations

import random
import struct

import pytest

from acp_openwrt.control import blobmsg
from acp_openwrt.control import ubus_protocol as proto
from acp_openwrt.control.blobmsg import BlobError
from acp_openwrt.control.ubus_protocol import (
    Hello,
    Invoke,
    Malformed,
    RequestDone,
    UbusClientProtocol,
    UbusProtocolError,
)

pytestmark = pytest.mark.unit

# ubusd's HELLO to a new client (our client id 0xae2327cc)
HELLO = bytes.fromhex("00000000ae2327cc00000004")
# what libubus would send to register "acp" with method "status" (no arguments); ubusd took it
ADD_OBJECT = bytes.fromhex("00060001000000000000002002000008616370000600001482000010000673746174"
                           "757300000000")
# ubusd's answer: DATA (OBJID 0xe65e8e79, OBJTYPE) then STATUS 0, in one read
ADD_ANSWER = bytes.fromhex("00020001000000000000001403000008e65e8e7905000008df3c838d000100010000"
                           "00000000000c0100000800000000")
# `ubus call acp status '{"ubus_rpc_session":"0123...cdef","n":-5,"l":[true,1.5]}'` as relayed
INVOKE = bytes.fromhex(
    "000500021544f3a1000000a003000008e65e8e790400000b73746174757300000c000009726f6f74000000000d0000"
    "09726f6f740000000007000070830000390010756275735f7270635f73657373696f6e0000303132333435363738"
    "3961626364656630313233343536373839616263646566000000008500000c00016e00fffffffb8100002400016c"
    "0087000009000000000100000088000010000000003ff8000000000000")
PONG = bytes.fromhex("00020002000000000000000400010002000000000000000c0100000800000000")


def registered() -> UbusClientProtocol:
    core = UbusClientProtocol()
    assert core.receive(HELLO) == [Hello(0xAE2327CC)]
    seq, message = core.add_object("acp", {"status": {}})
    assert (seq, message) == (1, ADD_OBJECT)
    return core


def test_hello_add_object_and_its_answer_match_ubusd() -> None:
    core = registered()
    [done] = core.receive(ADD_ANSWER)
    assert done == RequestDone(1, 0, [{proto.ATTR_OBJID: 0xE65E8E79,
                                       proto.ATTR_OBJTYPE: 0xDF3C838D}])


def test_invoke_from_the_cli_carries_the_rpc_session_and_typed_args() -> None:
    core = registered()
    core.receive(ADD_ANSWER)
    [call] = core.receive(INVOKE)
    assert call == Invoke(seq=2, peer=0x1544F3A1, object_id=0xE65E8E79, method="status",
                          args={"ubus_rpc_session": "0123456789abcdef0123456789abcdef",
                                "n": -5, "l": [True, 1.5]})
    reply = core.reply(call, {"version": "0.1.0"})
    # DATA (seq and peer of the call, OBJID, DATA) then STATUS 0, as libubus answers
    kind, seq, peer = struct.unpack_from(">xBHI", reply)
    assert (kind, seq, peer) == (proto.DATA, 2, 0x1544F3A1)
    assert reply.endswith(bytes.fromhex("000100021544f3a1000000140100000800000000"
                                        "03000008e65e8e79"))


def test_ping_is_answered_by_ubusds_pong_then_status() -> None:
    core = registered()
    core.receive(ADD_ANSWER)
    seq, message = core.ping()
    assert seq == 2 and message == bytes.fromhex("0003000200000000" + "00000004")
    assert core.receive(PONG) == [RequestDone(2, 0, [{}])]


def test_messages_split_at_every_byte_still_frame() -> None:
    core = UbusClientProtocol()
    stream = HELLO + INVOKE
    out = []
    for i in range(len(stream)):
        out += core.receive(stream[i:i + 1])
    assert [type(e) for e in out] == [Hello, Invoke]


def test_answer_to_a_forgotten_request_is_ignored() -> None:
    core = registered()
    core.forget(1)
    assert core.receive(ADD_ANSWER) == []


def test_blobmsg_round_trip_every_type() -> None:
    table = {"s": "é", "t": True, "f": False, "i": -7, "big": 2 ** 40, "d": 0.25,
             "tab": {"x": [1, "a", {"y": []}]}, "empty": {}, "n": None}
    assert blobmsg.decode_table(blobmsg.encode_table(table)) == {
        k: v for k, v in table.items() if v is not None}


def test_blobmsg_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(BlobError):
        blobmsg.encode_table({"x": object()})
    deep: dict[str, object] = {}
    for _ in range(blobmsg.MAX_DEPTH + 2):
        deep = {"d": deep}
    with pytest.raises(BlobError):
        blobmsg.encode_table(deep)


def test_bad_header_loses_framing() -> None:
    with pytest.raises(UbusProtocolError):
        UbusClientProtocol().receive(b"\x01" + HELLO[1:])
    with pytest.raises(UbusProtocolError):  # longer than ubusd's 1 MiB limit
        UbusClientProtocol().receive(HELLO[:8] + struct.pack(">I", 2 * 1024 * 1024))


def test_malformed_bodies_are_dropped_not_raised() -> None:
    """Every corruption of a relayed call: a Malformed event or a parse, never an exception
    other than the framing error, and the next message still parses."""
    rng = random.Random(8994)
    for _ in range(3000):
        body = bytearray(INVOKE)
        for _ in range(rng.randint(1, 6)):
            body[rng.randrange(12, len(body))] = rng.randrange(256)
        core = registered()
        core.receive(ADD_ANSWER)
        got = core.receive(bytes(body) + PONG[:0])
        assert all(isinstance(e, (Invoke, Malformed)) for e in got)
        assert isinstance(core.receive(HELLO)[0], Hello)


def test_decoder_fuzz_raises_only_blob_error() -> None:
    rng = random.Random(1)
    good = blobmsg.encode_table({"a": {"b": [1, "x", 2.5]}, "c": "d"})
    for _ in range(5000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            blobmsg.decode_table(bytes(data[:rng.randint(0, len(data))]))
        except BlobError:
            pass
